"""La-ER (paper §5.3): experience replay whose weight step is scaled by learnt
per-parameter learning rates, α learnt from the last inner step's meta-loss.

  python -m lamaml_jax.main --config=configs/laer.py:DATASET[,SETTING]

Values: run_experiments.sh. The official code has no MNIST La-ER cell: the MNIST
cells are our own configuration (La-MAML's MNIST values: 5 glances, opt_lr 0.3,
alpha_init 0.15), there to compare every method on the offline benchmarks.
Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=laer --dataset=mnist5k_rotations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=laer --dataset=mnist5k_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=laer --dataset=mnist5k_many_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=laer --dataset=mnist_rotations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=laer --dataset=mnist_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=laer --dataset=mnist_many_permutations --setting=single_pass
      our own config, no paper figure
  python -m lamaml_jax.main --method=laer --dataset=cifar100 --setting=multi_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=laer --dataset=cifar100 --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=laer --dataset=tinyimagenet --setting=multi_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=laer --dataset=tinyimagenet --setting=single_pass
      paper RA not recorded
"""
from configs import base
from configs import lamaml_family
from lamaml_jax.learners import lamaml

_OURS = dict(glances=5, opt_lr=0.3, alpha_init=0.15)
_CIFAR = dict(opt_lr=0.1, alpha_init=0.1, first_order=True)

CELLS = base.Cells(
    method="laer", hparams=lamaml.METHODS["laer"].hparams,
    structure=lamaml_family.structure,
    script={
        ("rotations", "single_pass"): _OURS,
        ("permutations", "single_pass"): _OURS,
        ("many_permutations", "single_pass"): dict(_OURS, memory_size=500),
        ("cifar100", "multi_pass"): _CIFAR,
        ("cifar100", "single_pass"): dict(_CIFAR, glances=1),
        ("tinyimagenet", "multi_pass"): dict(opt_lr=0.1, alpha_init=0.03, first_order=True),
        ("tinyimagenet", "single_pass"): dict(opt_lr=0.1, alpha_init=0.3, first_order=True,
                                              glances=2),
    },
    default_dataset="cifar100")


def get_config(arg: str = "cifar100"):
  return CELLS.config(arg)
