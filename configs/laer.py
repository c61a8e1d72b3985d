"""La-ER configs for every paper cell (values: the table in configs/common.py).

  python -m lamaml_jax.main --config=configs/laer.py:DATASET,SETTING[,appendix]

Defaults are the official run_experiments.sh flags, which produced the paper's
figures; ',appendix' selects the appendix tables' values where they differ
(TinyImageNet cells other than La-MAML have no script flags: Table 5 values).
Cells (the paper's MNIST figures use full MNIST; mnist5k_* are the offline stand-ins):

  python -m lamaml_jax.main --method=laer --dataset=cifar100 --setting=multi_pass
      paper RA: not recorded in DESIGN.md; glances 1, epochs 10
  python -m lamaml_jax.main --method=laer --dataset=cifar100 --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 1, epochs 1
  python -m lamaml_jax.main --method=laer --dataset=tinyimagenet --setting=multi_pass
      paper RA: not recorded in DESIGN.md; glances 1, epochs 10
  python -m lamaml_jax.main --method=laer --dataset=tinyimagenet --setting=single_pass
      paper RA: not recorded in DESIGN.md; glances 2, epochs 1
"""
from configs import common


def get_config(arg: str = "cifar100"):
  return common.make("laer", arg)
