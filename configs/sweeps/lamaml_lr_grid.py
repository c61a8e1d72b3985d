r"""La-MAML's α0 x η grid on rotations (appendix E), 3 seeds: one cell, 27
members in one program.

  python -m lamaml_jax.sweep --sweep=configs/sweeps/lamaml_lr_grid.py \
      --workdir=runs/lamaml_lr_grid
"""
from lamaml_jax import sweep


def get_config():
  return sweep.description(
      methods="lamaml", datasets="mnist5k_rotations", seeds="0-2",
      grid="alpha_init=0.03,0.1,0.3;opt_lr=0.03,0.1,0.3")
