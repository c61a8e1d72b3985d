"""Online: plain SGD on the stream, no replay (the single-pass lower bound).

  python -m lamaml_jax.main --config=configs/online.py:DATASET

The official La-MAML code has no Online; appendix H takes its MNIST figures from
the MER repository, whose setup the cells follow: batch 1 (`batch_size=1`), one
pass, one step a sample, no clip, lr 3e-4 / 3e-3 / 3e-3 on Rotations /
Permutations / Many Permutations (`mer_examples.sh`). Its MLP is Glorot-uniform
initialised, ours Kaiming-normal as the La-MAML code. Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=online --dataset=mnist5k_rotations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=online --dataset=mnist5k_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=online --dataset=mnist5k_many_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=online --dataset=mnist_rotations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=online --dataset=mnist_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=online --dataset=mnist_many_permutations --setting=single_pass
      paper RA not recorded
"""
from configs import base
from lamaml_jax.learners import online

CELLS = base.Cells(
    method="online", hparams=online.OnlineHparams,
    script={("rotations", "single_pass"): dict(lr=3e-4),
            ("permutations", "single_pass"): dict(lr=3e-3),
            ("many_permutations", "single_pass"): dict(lr=3e-3)},
    run={key: dict(batch_size=1) for key in base.mnist_cells()})


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
