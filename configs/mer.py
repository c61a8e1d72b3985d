"""MER: Meta-Experience Replay, S rounds of single-sample SGD over each example
and R replay samples with Reptile interpolations.

  python -m lamaml_jax.main --config=configs/mer.py:DATASET[,SETTING[,appendix]]

CIFAR-100 / TinyImageNet (single pass only, as in the paper): run_experiments.sh
(`meralg1.py`): batch 1 (`batch_size=1`), lr 0.1, β 0.1, γ 1, S 10, replay 25,
clip 10, memory 200 (TinyImageNet 400), the official reservoir's inclusive slot
draw and replay with replacement; ',appendix': the text's replay 10 and clip 2.0.
MNIST (no cell in the official script; appendix H takes its figures from the MER
repository, `mer_examples.sh`): batch 1, one pass, no clip, γ 1, Rotations lr 0.1,
β 0.01, R 10, S 5; Permutations lr 0.03, β 0.03, R 10, S 10; Many Permutations
memory 500, lr 0.03, β 0.03, R 5, S 10. Cells and the paper's RA (%):

  python -m lamaml_jax.main --method=mer --dataset=mnist5k_rotations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=mer --dataset=mnist5k_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=mer --dataset=mnist5k_many_permutations --setting=single_pass
      no paper figure (offline stand-in)
  python -m lamaml_jax.main --method=mer --dataset=mnist_rotations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=mer --dataset=mnist_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=mer --dataset=mnist_many_permutations --setting=single_pass
      paper RA not recorded
  python -m lamaml_jax.main --method=mer --dataset=cifar100 --setting=single_pass
      paper RA 51.38
  python -m lamaml_jax.main --method=mer --dataset=tinyimagenet --setting=single_pass
      paper RA 44.87
"""
from configs import base
from lamaml_jax.learners import mer

_OFFICIAL = dict(reservoir_inclusive_randint=True, replay_with_replacement=True,
                 gamma=1.0)
_MER_REPO = dict(_OFFICIAL, grad_clip_norm=None, memory_size=200)
_SCRIPT = dict(_OFFICIAL, lr=0.1, beta=0.1, batches_per_example=10,
               replay_batch_size=25, grad_clip_norm=10.0)
_TEXT = dict(replay_batch_size=10, grad_clip_norm=2.0)

CELLS = base.Cells(
    method="mer", hparams=mer.MERHparams,
    script={
        ("rotations", "single_pass"): dict(_MER_REPO, lr=0.1, beta=0.01,
                                           replay_batch_size=10, batches_per_example=5),
        ("permutations", "single_pass"): dict(_MER_REPO, lr=0.03, beta=0.03,
                                              replay_batch_size=10,
                                              batches_per_example=10),
        ("many_permutations", "single_pass"): dict(_MER_REPO, memory_size=500, lr=0.03,
                                                   beta=0.03, replay_batch_size=5,
                                                   batches_per_example=10),
        ("cifar100", "single_pass"): dict(_SCRIPT, memory_size=200),
        ("tinyimagenet", "single_pass"): dict(_SCRIPT, memory_size=400),
    },
    appendix={("cifar100", "single_pass"): _TEXT,
              ("tinyimagenet", "single_pass"): _TEXT},
    run={key: dict(batch_size=1)
         for key in base.mnist_cells() + [("cifar100", "single_pass"),
                                          ("tinyimagenet", "single_pass")]},
    paper_ra={("cifar100", "single_pass"): 51.38,
              ("tinyimagenet", "single_pass"): 44.87},
    default_dataset="mnist5k_rotations")


def get_config(arg: str = "mnist5k_rotations"):
  return CELLS.config(arg)
