"""Sync La-MAML (paper §5): learnt per-parameter learning rates α, weights
stepped by SGD (opt_wt) instead of by relu(α).

  python -m lamaml_jax.main --config=configs/sync.py:DATASET[,SETTING[,appendix]]

Values: run_experiments.sh (which produced the paper's figures); ',appendix':
Table 6's where they differ. The mnist5k_* cells are the offline stand-ins of
the MNIST cells; the paper has no figure for them. Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=sync --dataset=mnist5k_rotations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=sync --dataset=mnist5k_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=sync --dataset=mnist5k_many_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=sync --dataset=mnist_rotations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=sync --dataset=mnist_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=sync --dataset=mnist_many_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=sync --dataset=cifar100 --setting=multi_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=sync --dataset=cifar100 --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=sync --dataset=tinyimagenet --setting=multi_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=sync --dataset=tinyimagenet --setting=single_pass
      paper RA not recorded
"""
from configs import base
from configs import lamaml_family
from lamaml_jax.learners import lamaml

_CIFAR = dict(opt_lr=0.35, alpha_init=0.1, opt_wt=0.1)
_TINY = dict(opt_lr=0.25, alpha_init=0.075, opt_wt=0.075)

CELLS = base.Cells(
    method="sync", hparams=lamaml.METHODS["sync"].hparams,
    structure=lamaml_family.structure,
    script={
        ("rotations", "single_pass"): dict(glances=5, opt_lr=0.1, opt_wt=0.3,
                                           alpha_init=0.15),
        ("permutations", "single_pass"): dict(glances=5, opt_lr=0.1, opt_wt=0.1,
                                              alpha_init=0.15),
        ("many_permutations", "single_pass"): dict(glances=10, opt_lr=0.1, opt_wt=0.03,
                                                   alpha_init=0.03),
        ("cifar100", "multi_pass"): _CIFAR,
        ("cifar100", "single_pass"): dict(_CIFAR, glances=5),
        ("tinyimagenet", "multi_pass"): _TINY,
        ("tinyimagenet", "single_pass"): dict(_TINY, glances=2),
    },
    appendix={("cifar100", "multi_pass"): dict(opt_lr=0.3),
              ("cifar100", "single_pass"): dict(opt_lr=0.3)})


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
