r"""Time and peak memory of one meta-update per hypergradient implementation.

  python benchmarks/hypergrad.py [--arch=cifar_cnn] [--cases=2x10,5x10,10x10,20x20] \
      [--orders=first,second] [--repeats=5] [--json=FILE]

For each inner-step count k and batch B (case 'kxB': k slices of B/k samples,
meta batch of B + 10 replay samples) and each order, the compiled
`lookahead.meta_gradients` of La-MAML's CIFAR cells (raw α, elementwise clamp)
with `hypergrad_impl` 'fast', 'autodiff' and 'autodiff' + `remat_inner_steps`:
the median wall time of one call (after compilation) and XLA's own account of
the program's memory (`compiled.memory_analysis()`: temporaries plus arguments
and outputs), which is what bounds k on an accelerator.
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lamaml_jax import heads  # pylint: disable=wrong-import-position
from lamaml_jax import lookahead  # pylint: disable=wrong-import-position
from lamaml_jax import networks  # pylint: disable=wrong-import-position
from lamaml_jax.types import Batch  # pylint: disable=wrong-import-position

ARCH = flags.DEFINE_enum("arch", "cifar_cnn", ["cifar_cnn", "tinyimagenet_cnn", "mlp"],
                         "Network.")
CASES = flags.DEFINE_list("cases", ["2x10", "5x10", "10x10", "20x20"],
                          "Inner steps x batch size.")
ORDERS = flags.DEFINE_list("orders", ["first", "second"], "first and/or second order.")
REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per program (median).")
JSON = flags.DEFINE_string("json", None, "Also write the figures here.")

IMPLS = {"fast": dict(hypergrad_impl="fast"),
         "autodiff": dict(hypergrad_impl="autodiff"),
         "autodiff+remat": dict(hypergrad_impl="autodiff", remat=True)}
SHAPES = {"cifar_cnn": (32, 32, 3), "tinyimagenet_cnn": (64, 64, 3), "mlp": (784,)}
REPLAY = 10


def problem(arch: str, k: int, b: int):
  net = networks.make_network(arch, 100)
  shape = SHAPES[arch]
  rng = np.random.default_rng(0)

  def batch(n):
    return Batch(x=jnp.asarray(rng.normal(size=(n, *shape)), jnp.float32),
                 y=jnp.asarray(rng.integers(0, 5, n), jnp.int32),
                 task=jnp.zeros((n,), jnp.int32), weight=jnp.ones((n,), jnp.float32))
  params = net.init(jax.random.PRNGKey(0), batch(1).x)["params"]
  lrs = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1), params)
  stream = batch(b)
  inner = lookahead.split_into_slices(stream, k)
  meta = jax.tree_util.tree_map(lambda r, s: jnp.concatenate([r, s]), batch(REPLAY), stream)

  def loss(p, bt):
    return heads.cross_entropy(net.apply({"params": p}, bt.x), bt, 5)
  return loss, params, lrs, inner, meta


def measure(arch: str, k: int, b: int, first_order: bool, impl: dict, repeats: int):
  loss, params, lrs, inner, meta = problem(arch, k, b)
  options = lookahead.LookaheadOptions(
      first_order=first_order, grad_clamp=1.0, relu_lrs=False, meta_loss="mean",
      **lookahead.hypergrad_options(impl["hypergrad_impl"], impl.get("remat", False)))
  fn = jax.jit(lambda p, a: lookahead.meta_gradients(loss, p, a, inner, meta, options)[:3])
  began = time.perf_counter()
  compiled = fn.lower(params, lrs).compile()
  compile_s = time.perf_counter() - began
  jax.block_until_ready(compiled(params, lrs))
  times = []
  for _ in range(repeats):
    began = time.perf_counter()
    jax.block_until_ready(compiled(params, lrs))
    times.append(time.perf_counter() - began)
  mem = compiled.memory_analysis()
  peak = None
  if mem is not None:
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
            + mem.output_size_in_bytes) / 2**20
  return {"ms": 1e3 * float(np.median(times)), "compile_s": compile_s, "peak_mib": peak}


def main(argv):
  del argv
  rows = []
  print(f"{ARCH.value}, {jax.default_backend()}; ms per meta-update (median of "
        f"{REPEATS.value}), XLA peak MiB, compile s")
  print(f"{'case':>6} {'order':>6} {'impl':>15} {'ms':>9} {'MiB':>8} {'compile':>8}")
  for case in CASES.value:
    k, b = (int(v) for v in case.split("x"))
    for order in ORDERS.value:
      for name, impl in IMPLS.items():
        r = measure(ARCH.value, k, b, order == "first", impl, REPEATS.value)
        rows.append({"case": case, "order": order, "impl": name, **r})
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        print(f"{case:>6} {order:>6} {name:>15} {r['ms']:9.1f} {peak:>8} "
              f"{r['compile_s']:8.1f}", flush=True)
  if JSON.value:
    with open(JSON.value, "w") as f:
      json.dump({"arch": ARCH.value, "backend": jax.default_backend(), "rows": rows},
                f, indent=1)


if __name__ == "__main__":
  app.run(main)
