r"""Our offline MNIST task streams in the official La-MAML code's data format.

Lets the official PyTorch code (montrealrobotics/La-MAML) run on exactly the tasks
of our `mnist5k_rotations` / `mnist5k_permutations` benchmarks, so that its RA can
stand beside ours (README, "Accuracy beside the official code"). Two steps, since
the two codes live in different environments:

  # 1. here: write the tasks of one seed (preprocessed pixels in [0, 1])
  python benchmarks/official_mnist_data.py export --kind=rotations --seed=0 --out=DIR
  # 2. in the official code's environment (torch and numpy only): DIR/mnist_rotations.pt
  REF_PYTHON benchmarks/official_mnist_data.py to_torch DIR/mnist_rotations.npz
  # 3. the official script's flags, without --cuda:
  REF_PYTHON main.py --dataset mnist_rotations --data_path DIR/ --samples_per_task 1000 ...

The official task-incremental loader reads `(train, test)`, each a list of one
`(tag, x [N, 784] float, y [N] int64)` per task, and imports torchvision without
using it for these files (a stub module will do where torchvision does not load).
"""
from __future__ import annotations

import argparse
import os
import sys

KINDS = ("rotations", "permutations")


def export(kind: str, seed: int, out_dir: str, num_tasks: int = 20,
           samples_per_task: int = 1000) -> str:
  """Writes OUT/mnist_<kind>.npz: tr_x{t}, tr_y{t}, te_x{t}, te_y{t} per task t."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from lamaml_jax.data import make_benchmark  # pylint: disable=g-import-not-at-top

  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
  bench = make_benchmark(f"mnist5k_{kind}", seed=seed, data_dir=None,
                         num_tasks=num_tasks, samples_per_task=samples_per_task)
  preprocess = jax.jit(bench.preprocess)
  arrays = {}
  for t in range(bench.num_tasks):
    for split, x, y in (("tr", bench.train_x[t], bench.train_y[t]),
                        ("te", bench.test_x[t], bench.test_y[t])):
      arrays[f"{split}_x{t}"] = np.asarray(preprocess(x)).reshape(len(y), -1)
      arrays[f"{split}_y{t}"] = np.asarray(y, np.int64)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"mnist_{kind}.npz")
  np.savez_compressed(path, **arrays)
  return path


def to_torch(npz_path: str) -> str:
  """Converts `export`'s file into the official loader's .pt next to it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  data = np.load(npz_path)
  num_tasks = sum(1 for k in data.files if k.startswith("tr_x"))
  tag = os.path.splitext(os.path.basename(npz_path))[0]
  splits = [[(tag, torch.from_numpy(data[f"{s}_x{t}"]), torch.from_numpy(data[f"{s}_y{t}"]))
             for t in range(num_tasks)] for s in ("tr", "te")]
  path = os.path.splitext(npz_path)[0] + ".pt"
  torch.save(tuple(splits), path)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  ex = sub.add_parser("export", help="write our tasks as .npz (this environment)")
  ex.add_argument("--kind", choices=KINDS, required=True)
  ex.add_argument("--seed", type=int, default=0)
  ex.add_argument("--out", required=True)
  tt = sub.add_parser("to_torch", help="convert the .npz to the official .pt (torch)")
  tt.add_argument("npz")
  args = parser.parse_args(argv)
  path = (export(args.kind, args.seed, args.out) if args.command == "export"
          else to_torch(args.npz))
  print(path)


if __name__ == "__main__":
  main()
