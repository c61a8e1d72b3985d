"""C-MAML (paper §4, Appendix B): look-ahead meta-learning with a fixed scalar
inner learning rate α = alpha_init and SGD weight steps (opt_wt).

  python -m lamaml_jax.main --config=configs/cmaml.py:DATASET[,SETTING[,appendix]]

Values: run_experiments.sh (which produced the paper's figures); ',appendix':
Table 5's where they differ. The mnist5k_* cells are the offline stand-ins of
the MNIST cells; the paper has no figure for them. Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=cmaml --dataset=mnist5k_rotations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=cmaml --dataset=mnist5k_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=cmaml --dataset=mnist5k_many_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=cmaml --dataset=mnist_rotations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=cmaml --dataset=mnist_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=cmaml --dataset=mnist_many_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=cmaml --dataset=cifar100 --setting=multi_pass
      paper RA 65.44
  python -m lamaml_jax.main --method=cmaml --dataset=cifar100 --setting=single_pass
      paper RA 55.57
  python -m lamaml_jax.main --method=cmaml --dataset=tinyimagenet --setting=multi_pass
      paper RA 61.93
  python -m lamaml_jax.main --method=cmaml --dataset=tinyimagenet --setting=single_pass
      paper RA 48.77
"""
from configs import base
from configs import lamaml_family
from lamaml_jax.learners import lamaml

_CIFAR = dict(opt_lr=0.35, alpha_init=0.075, opt_wt=0.075)
_TINY = dict(opt_lr=0.35, alpha_init=0.03, opt_wt=0.03)

CELLS = base.Cells(
    method="cmaml", hparams=lamaml.METHODS["cmaml"].hparams,
    structure=lamaml_family.structure,
    script={
        ("rotations", "single_pass"): dict(glances=5, opt_wt=0.1, alpha_init=0.1),
        ("permutations", "single_pass"): dict(glances=5, opt_wt=0.1, alpha_init=0.03),
        ("many_permutations", "single_pass"): dict(glances=5, opt_wt=0.15,
                                                   alpha_init=0.03),
        ("cifar100", "multi_pass"): _CIFAR,
        ("cifar100", "single_pass"): dict(_CIFAR, glances=2),
        ("tinyimagenet", "multi_pass"): _TINY,
        ("tinyimagenet", "single_pass"): dict(_TINY, glances=2),
    },
    appendix={
        ("cifar100", "multi_pass"): dict(alpha_init=0.03, opt_wt=0.03),
        ("cifar100", "single_pass"): dict(alpha_init=0.03, opt_wt=0.03, glances=5),
    },
    paper_ra={("cifar100", "multi_pass"): 65.44, ("cifar100", "single_pass"): 55.57,
              ("tinyimagenet", "multi_pass"): 61.93,
              ("tinyimagenet", "single_pass"): 48.77})


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
