r"""Every method on the offline MNIST-5k benchmarks, seeds 0-2: the README's
methods table (about 1.5 h on 2 CPU cores).

  python -m lamaml_jax.sweep --sweep=configs/sweeps/mnist5k_table.py \
      --workdir=runs/mnist5k_table
"""
from lamaml_jax import sweep


def get_config():
  return sweep.description(
      methods="lamaml,cmaml,sync,laer,er,mer,gem,agem,ewc,icarl,meta_bgd,online,iid",
      datasets="mnist5k_rotations,mnist5k_permutations,mnist5k_split",
      seeds="0-2")
