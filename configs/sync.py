"""Sync La-MAML configs for every paper cell (values: the table in configs/common.py).

  python -m lamaml_jax.main --config=configs/sync.py:DATASET,SETTING[,appendix]

Defaults are the official run_experiments.sh flags, which produced the paper's
figures; ',appendix' selects the appendix tables' values where they differ
(TinyImageNet cells other than La-MAML have no script flags: Table 5 values).
Cells (the paper's MNIST figures use full MNIST; mnist5k_* are the offline stand-ins):

  python -m lamaml_jax.main --method=sync --dataset=mnist5k_rotations --setting=single_pass
      offline 4,000/1,000 mnist5k split (no paper figure); glances 5, epochs 1
  python -m lamaml_jax.main --method=sync --dataset=mnist5k_permutations --setting=single_pass
      offline 4,000/1,000 mnist5k split (no paper figure); glances 5, epochs 1
  python -m lamaml_jax.main --method=sync --dataset=mnist5k_many_permutations --setting=single_pass
      offline 4,000/1,000 mnist5k split (no paper figure); glances 10, epochs 1
  python -m lamaml_jax.main --method=sync --dataset=mnist_rotations --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 5, epochs 1
  python -m lamaml_jax.main --method=sync --dataset=mnist_permutations --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 5, epochs 1
  python -m lamaml_jax.main --method=sync --dataset=mnist_many_permutations --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 10, epochs 1
  python -m lamaml_jax.main --method=sync --dataset=cifar100 --setting=multi_pass
      paper RA: not recorded in DESIGN.md; glances 1, epochs 10; ',appendix' differs: {'opt_lr': 0.3}
  python -m lamaml_jax.main --method=sync --dataset=cifar100 --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 5, epochs 1; ',appendix' differs: {'opt_lr': 0.3}
  python -m lamaml_jax.main --method=sync --dataset=tinyimagenet --setting=multi_pass
      paper RA: not recorded in DESIGN.md; glances 1, epochs 10
  python -m lamaml_jax.main --method=sync --dataset=tinyimagenet --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 2, epochs 1
"""
from configs import common


def get_config(arg: str = "mnist5k_rotations"):
  return common.make("sync", arg)
