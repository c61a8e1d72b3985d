"""IID: the multi-task upper bound, trained on all tasks' data shuffled together.

  python -m lamaml_jax.main --config=configs/iid.py:DATASET[,SETTING]

CIFAR-100 / TinyImageNet (multi-pass only, as the paper): run_experiments.sh's
`iid2.py`: batch 32, 50 epochs, lr 0.03 / 0.01, no clip, and its loader's batches
of 8 samples from each of 4 random tasks with 5,000-batch epochs
(`iid_tasks_per_batch=4`, `iid_steps_per_epoch=5000`; the defaults, 0, shuffle
all samples and make an epoch one pass). MNIST (no official cell): our own choice,
batch 32, lr 0.1 and 5 epochs over the shuffled data of all tasks, so that it
bounds the single-pass methods from above. Evaluated at T evenly spaced points;
only RA is defined. Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=iid --dataset=mnist5k_rotations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=iid --dataset=mnist5k_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=iid --dataset=mnist5k_many_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=iid --dataset=mnist_rotations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=iid --dataset=mnist_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=iid --dataset=mnist_many_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=iid --dataset=cifar100 --setting=multi_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=iid --dataset=tinyimagenet --setting=multi_pass
      paper RA not recorded
"""
from configs import base
from lamaml_jax.learners import iid

_OFFICIAL = dict(batch_size=32, epochs=50, iid_tasks_per_batch=4, iid_steps_per_epoch=5000)

CELLS = base.Cells(
    method="iid", hparams=iid.IIDHparams,
    script={**{key: dict(lr=0.1) for key in base.mnist_cells()},
            ("cifar100", "multi_pass"): dict(lr=0.03),
            ("tinyimagenet", "multi_pass"): dict(lr=0.01)},
    run={**{key: dict(batch_size=32, epochs=5) for key in base.mnist_cells()},
         ("cifar100", "multi_pass"): _OFFICIAL, ("tinyimagenet", "multi_pass"): _OFFICIAL})


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
