"""The appendix's analyses, one command each (README, "Analyses"):

  python -m lamaml_jax.analyses.alignment      --dataset=mnist5k_rotations  # D, Fig. 4
  python -m lamaml_jax.analyses.lr_robustness  --dataset=mnist5k_rotations  # E, Figs. 5-6
  python -m lamaml_jax.analyses.ra_vs_time     --dataset=mnist5k_rotations  # F, Fig. 7

Each writes <workdir>/<analysis>.json and its PNGs; --plot_only redraws them
from the JSON. Common flags: `common`.
"""
