"""ER: experience replay from a reservoir, joined to each incoming batch.

  python -m lamaml_jax.main --config=configs/er.py:DATASET[,SETTING[,appendix]]

CIFAR-100 / TinyImageNet: run_experiments.sh (`eralg4.py`): replay batch 1, clip
2.0, the official reservoir's inclusive slot draw and replay with replacement;
',appendix': Table 5's where they differ (replay batch 10; TinyImageNet lr 0.1,
single-pass 10 glances). MNIST (no cell in the official script; appendix H takes
its figures from the MER repository): the MER setup, batch 1 (`batch_size=1`),
one pass, no clip, lr 0.1 with 10 replay samples (Many Permutations: 25, memory
500). Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=er --dataset=mnist5k_rotations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=er --dataset=mnist5k_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=er --dataset=mnist5k_many_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=er --dataset=mnist_rotations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=er --dataset=mnist_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=er --dataset=mnist_many_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=er --dataset=cifar100 --setting=multi_pass
      paper RA 59.7
  python -m lamaml_jax.main --method=er --dataset=cifar100 --setting=single_pass
      paper RA 47.88
  python -m lamaml_jax.main --method=er --dataset=tinyimagenet --setting=multi_pass
      paper RA 48.23
  python -m lamaml_jax.main --method=er --dataset=tinyimagenet --setting=single_pass
      paper RA 39.38
"""
from configs import base
from lamaml_jax.learners import er

_MER = dict(lr=0.1, replay_batch_size=10, memory_size=200, grad_clip_norm=None)
_SCRIPT = dict(replay_batch_size=1, grad_clip_norm=2.0, reservoir_inclusive_randint=True,
               replay_with_replacement=True)

CELLS = base.Cells(
    method="er", hparams=er.ERHparams,
    script={
        ("rotations", "single_pass"): _MER,
        ("permutations", "single_pass"): _MER,
        ("many_permutations", "single_pass"): dict(_MER, replay_batch_size=25,
                                                   memory_size=500),
        ("cifar100", "multi_pass"): dict(_SCRIPT, lr=0.03, memory_size=200),
        ("cifar100", "single_pass"): dict(_SCRIPT, lr=0.03, memory_size=200, glances=10),
        ("tinyimagenet", "multi_pass"): dict(_SCRIPT, lr=0.01, memory_size=400),
        ("tinyimagenet", "single_pass"): dict(_SCRIPT, lr=0.01, memory_size=400,
                                              glances=2),
    },
    appendix={
        ("cifar100", "multi_pass"): dict(replay_batch_size=10),
        ("cifar100", "single_pass"): dict(replay_batch_size=10),
        ("tinyimagenet", "multi_pass"): dict(replay_batch_size=10, lr=0.1),
        ("tinyimagenet", "single_pass"): dict(replay_batch_size=10, lr=0.1, glances=10),
    },
    run={key: dict(batch_size=1) for key in base.mnist_cells()},
    paper_ra={("cifar100", "multi_pass"): 59.7, ("cifar100", "single_pass"): 47.88,
              ("tinyimagenet", "multi_pass"): 48.23,
              ("tinyimagenet", "single_pass"): 39.38})


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
