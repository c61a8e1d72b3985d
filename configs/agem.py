"""A-GEM: GEM's memories, with one projection on the past tasks' reference
gradient instead of a QP (Chaudhry et al., 2019).

  python -m lamaml_jax.main --config=configs/agem.py:DATASET[,SETTING]

CIFAR-100 / TinyImageNet: run_experiments.sh (`agem.py`): 10 memories per task,
clip 2.0, and the official code's quirks: the reference gradient is the mean of
the past tasks' clipped memory gradients (`agem_ref`), task 0 is never
registered (`skip_task0`) and the ring pointer is shared (`shared_pointer`); the
defaults are A-GEM's paper (one gradient on the union of the memories, task 0
protected). MNIST: no official or MER-repository cell; our own configuration,
GEM's MNIST setup (batch 1, one pass, no clip, lr 0.01, 10 memories per task;
Many Permutations lr 0.003, 5 per task) with A-GEM's paper defaults. Cells and the
paper's RA (%):

  python -m lamaml_jax.main --method=agem --dataset=mnist5k_rotations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=agem --dataset=mnist5k_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=agem --dataset=mnist5k_many_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=agem --dataset=mnist_rotations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=agem --dataset=mnist_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=agem --dataset=mnist_many_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=agem --dataset=cifar100 --setting=multi_pass
      paper RA 58.37
  python -m lamaml_jax.main --method=agem --dataset=cifar100 --setting=single_pass
      paper RA 46.93
  python -m lamaml_jax.main --method=agem --dataset=tinyimagenet --setting=multi_pass
      paper RA 46.38
  python -m lamaml_jax.main --method=agem --dataset=tinyimagenet --setting=single_pass
      paper RA 38.96
"""
from configs import base
from lamaml_jax.learners import agem

_OURS = dict(lr=0.01, n_memories=10, grad_clip_norm=None)
_SCRIPT = dict(n_memories=10, grad_clip_norm=2.0, agem_ref="per_task_clipped_mean",
               skip_task0=True, shared_pointer=True)

CELLS = base.Cells(
    method="agem", hparams=agem.AGEMHparams,
    script={
        ("rotations", "single_pass"): _OURS,
        ("permutations", "single_pass"): _OURS,
        ("many_permutations", "single_pass"): dict(_OURS, lr=0.003, n_memories=5),
        ("cifar100", "multi_pass"): dict(_SCRIPT, lr=0.03),
        ("cifar100", "single_pass"): dict(_SCRIPT, lr=0.03, glances=2),
        ("tinyimagenet", "multi_pass"): dict(_SCRIPT, lr=0.01),
        ("tinyimagenet", "single_pass"): dict(_SCRIPT, lr=0.01, glances=2),
    },
    run={key: dict(batch_size=1) for key in base.mnist_cells()},
    paper_ra={("cifar100", "multi_pass"): 58.37, ("cifar100", "single_pass"): 46.93,
              ("tinyimagenet", "multi_pass"): 46.38,
              ("tinyimagenet", "single_pass"): 38.96})


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
