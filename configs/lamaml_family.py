"""What the La-MAML family's cells share: the inner-loop layout of each benchmark
family, as the official code sets it, and its replay quirks (the reservoir's
inclusive slot draw and replay with replacement; `replay`), so that a cell's
run is the official run's twin in distribution.

- MNIST (official `lamaml.py`): k = B = 10 single-sample inner steps, relu(α)
  inside the inner loop, no effective inner clamp (its result is discarded),
  first order, global clip 2.0, replay from the live buffer (its
  --use_old_task_memory aliases the two buffers); memory 200 (500 for Many
  Permutations).
- CIFAR-100 / TinyImageNet (official `lamaml_cifar.py`): 5 slices of 2, raw α
  inside, elementwise inner clamp at the clip value (each cell sets both),
  second order (La-ER: first order), memory 200 / 400; multi-pass has 1 glance.
"""
from __future__ import annotations


OFFICIAL_REPLAY = dict(reservoir_inclusive_randint=True, replay_with_replacement=True)


def structure(family: str, setting: str) -> dict:
  if family in ("rotations", "permutations", "many_permutations"):
    return dict(OFFICIAL_REPLAY, inner_steps=10, relu_inner_lrs=True, inner_grad_clamp=None,
                first_order=True, grad_clip_norm=2.0, use_old_task_memory=False,
                memory_size=500 if family == "many_permutations" else 200)
  return dict(OFFICIAL_REPLAY, inner_steps=5, relu_inner_lrs=False, first_order=False,
              grad_clip_norm=2.0, inner_grad_clamp=2.0, use_old_task_memory=False,
              memory_size=200 if family == "cifar100" else 400,
              **({"glances": 1} if setting == "multi_pass" else {}))
