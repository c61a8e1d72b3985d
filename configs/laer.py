"""La-ER configs for every paper cell (see configs/common.py for the table).

  python -m lamaml_jax.main --method=laer --dataset=DATASET [--setting=SETTING]
  python -m lamaml_jax.main --config=configs/laer.py:DATASET,SETTING[,appendix]

Defaults are the official run_experiments.sh flags, which produced the paper's
figures; ',appendix' selects the appendix tables' values where they differ.
"""
from configs import common


def get_config(arg: str = "cifar100"):
  return common.make("laer", arg)
