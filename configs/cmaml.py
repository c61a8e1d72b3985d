"""C-MAML configs for every paper cell (values: the table in configs/common.py).

  python -m lamaml_jax.main --config=configs/cmaml.py:DATASET,SETTING[,appendix]

Defaults are the official run_experiments.sh flags, which produced the paper's
figures; ',appendix' selects the appendix tables' values where they differ
(TinyImageNet cells other than La-MAML have no script flags: Table 5 values).
Cells (the paper's MNIST figures use full MNIST; mnist5k_* are the offline stand-ins):

  python -m lamaml_jax.main --method=cmaml --dataset=mnist5k_rotations --setting=single_pass
      offline 4,000/1,000 mnist5k split (no paper figure); glances 5, epochs 1
  python -m lamaml_jax.main --method=cmaml --dataset=mnist5k_permutations --setting=single_pass
      offline 4,000/1,000 mnist5k split (no paper figure); glances 5, epochs 1
  python -m lamaml_jax.main --method=cmaml --dataset=mnist5k_many_permutations --setting=single_pass
      offline 4,000/1,000 mnist5k split (no paper figure); glances 5, epochs 1
  python -m lamaml_jax.main --method=cmaml --dataset=mnist_rotations --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 5, epochs 1
  python -m lamaml_jax.main --method=cmaml --dataset=mnist_permutations --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 5, epochs 1
  python -m lamaml_jax.main --method=cmaml --dataset=mnist_many_permutations --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 5, epochs 1
  python -m lamaml_jax.main --method=cmaml --dataset=cifar100 --setting=multi_pass
      paper RA 65.44; glances 1, epochs 10; ',appendix' differs: {'alpha_init': 0.03, 'opt_wt': 0.03}
  python -m lamaml_jax.main --method=cmaml --dataset=cifar100 --setting=single_pass
      paper RA 55.57; glances 2, epochs 1; ',appendix' differs: {'alpha_init': 0.03, 'opt_wt': 0.03}
  python -m lamaml_jax.main --method=cmaml --dataset=tinyimagenet --setting=multi_pass
      paper RA 61.93; glances 1, epochs 10
  python -m lamaml_jax.main --method=cmaml --dataset=tinyimagenet --setting=single_pass
      paper RA 48.77; glances 2, epochs 1
"""
from configs import common


def get_config(arg: str = "mnist5k_rotations"):
  return common.make("cmaml", arg)
