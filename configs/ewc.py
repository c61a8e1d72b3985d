"""EWC: elastic weight consolidation (diagonal Fisher per finished task).

  python -m lamaml_jax.main --config=configs/ewc.py:DATASET

The official La-MAML code has no EWC; appendix H takes its MNIST figures from
the MER repository, whose setup the cells follow: batch 1 (`batch_size=1`), one
pass, no clip, the Fisher as the square of the batch-mean gradient over the
task's first 10 samples (`fisher='squared_mean_grad'`, `fisher_samples=10`; the
standard estimator, the mean of per-sample squares over the whole task, is the
default), lr 1e-3 with λ 100 / lr 1e-2 with λ 10 / lr 3e-3 with λ 1 on Rotations /
Permutations / Many Permutations (`mer_examples.sh`). Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=ewc --dataset=mnist5k_rotations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=ewc --dataset=mnist5k_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=ewc --dataset=mnist5k_many_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=ewc --dataset=mnist_rotations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=ewc --dataset=mnist_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=ewc --dataset=mnist_many_permutations --setting=single_pass
      paper RA not recorded
"""
from configs import base
from lamaml_jax.learners import ewc

_MER = dict(fisher="squared_mean_grad", fisher_samples=10)

CELLS = base.Cells(
    method="ewc", hparams=ewc.EWCHparams,
    script={("rotations", "single_pass"): dict(_MER, lr=1e-3, ewc_lambda=100.0),
            ("permutations", "single_pass"): dict(_MER, lr=1e-2, ewc_lambda=10.0),
            ("many_permutations", "single_pass"): dict(_MER, lr=3e-3, ewc_lambda=1.0)},
    run={key: dict(batch_size=1) for key in base.mnist_cells()})


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
