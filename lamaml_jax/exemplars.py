"""iCaRL's exemplar sets as pure functions on fixed arrays: herding, a store of K
slots, nearest-mean-of-exemplars classification.

Layout. The store has K flat slots (K = the memory budget), so it is O(K·D) for
inputs of D values, whatever the number of classes. With G classes stored and
m = ⌊K / G⌋ exemplars per class (the stride), class group g (the g-th class
stored, 0-based) owns slots [g·m, g·m + m); its exemplars fill a prefix
[g·m, g·m + n_g) of them, n_g ≤ m, in herding order (the k-th slot holds the
k-th pick), and `valid` marks that prefix. Each slot also records its class
label `y`. When C new classes arrive, m shrinks to m' = ⌊K / (G + C)⌋ and
`repack` gathers each old group's first m' exemplars (the first m' of its herding
order, as iCaRL's "reduce" step keeps) into slots [g·m', g·m' + m'); the new
classes are then written into groups G .. G + C − 1 (`add_classes`). m' = 0
(fewer slots than classes) empties the store.

Herding (`herd`, iCaRL's Algorithm 4): given the features φ_i of a class's
candidates and their mean μ, pick k = 1, 2, ... is the unused candidate i
minimising ‖μ − (φ_i + Σ_{j<k} φ_{p_j}) / k‖₂ (greedy; ties go to the lowest
index). It is one compiled `lax.fori_loop` over a static number of picks, with a
taken-mask over the candidates and the pick count m as a traced bound.

Nearest mean of exemplars (`class_means`, `nearest_mean_scores`): class c's mean
is the mean feature of its valid slots; a query scores −‖φ(x) − μ_c‖₂ on the
classes it may be assigned (and that have exemplars), −inf elsewhere, so argmax
is the nearest mean.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from lamaml_jax.types import PRNGKey

_HIGHEST = jax.lax.Precision.HIGHEST


class ExemplarStore(NamedTuple):
  """K exemplar slots (module docstring).

  Attributes:
    x: [K, *input_shape] stored inputs.
    y: [K] int32 class label of each slot (meaningless where not valid).
    valid: [K] bool, the slots holding an exemplar (a prefix of each group).
    per_class: [] int32 m, the stride: group g owns slots [g·m, g·m + m).
    num_classes: [] int32 G, class groups stored so far.
  """
  x: jax.Array
  y: jax.Array
  valid: jax.Array
  per_class: jax.Array
  num_classes: jax.Array


def init(capacity: int, input_shape: tuple[int, ...], dtype=jnp.float32
         ) -> ExemplarStore:
  """An empty store of `capacity` slots."""
  if capacity < 1:
    raise ValueError(f"An exemplar store needs capacity >= 1, got {capacity}.")
  return ExemplarStore(x=jnp.zeros((capacity, *input_shape), dtype),
                       y=jnp.zeros((capacity,), jnp.int32),
                       valid=jnp.zeros((capacity,), bool),
                       per_class=jnp.zeros((), jnp.int32),
                       num_classes=jnp.zeros((), jnp.int32))


def slot_groups(store: ExemplarStore) -> jax.Array:
  """[K] int32 group of each slot (slot // m; K where m = 0: no group)."""
  k = store.y.shape[0]
  m = store.per_class
  return jnp.where(m > 0, jnp.arange(k) // jnp.maximum(m, 1), k).astype(jnp.int32)


def group_counts(store: ExemplarStore, num_groups: int) -> jax.Array:
  """[num_groups] int32 exemplars n_g of groups 0 .. num_groups − 1 (static)."""
  return jax.ops.segment_sum(store.valid.astype(jnp.int32), slot_groups(store),
                             num_segments=num_groups)


def herd(features: jax.Array, candidates: jax.Array, m: jax.Array, max_picks: int
         ) -> tuple[jax.Array, jax.Array]:
  """Greedy herding of up to m of the candidates (module docstring).

  Args:
    features: [N, F] features φ of all rows.
    candidates: [N] bool, the rows of the class (μ is their mean).
    m: [] int picks wanted (≤ max_picks; fewer if fewer candidates).
    max_picks: static bound on m: the loop's trip count.

  Returns:
    (picks [max_picks] int32 row of pick k, picked [max_picks] bool: pick k
    made, i.e. k < min(m, number of candidates); a prefix).
  """
  features = features.astype(jnp.float32)
  n = features.shape[0]
  w = candidates.astype(jnp.float32)
  mu = jnp.dot(w, features, precision=_HIGHEST) / jnp.maximum(jnp.sum(w), 1.0)

  def pick(k, carry):
    taken, total, picks, picked = carry
    running = (features + total[None, :]) / (k + 1).astype(jnp.float32)
    cost = jnp.sum(jnp.square(mu[None, :] - running), axis=1)  # argmin of ‖·‖²
    free = candidates & ~taken
    i = jnp.argmin(jnp.where(free, cost, jnp.inf))
    ok = (k < m) & free[i]
    return (taken.at[i].set(taken[i] | ok),
            total + jnp.where(ok, features[i], 0.0),
            picks.at[k].set(jnp.where(ok, i, 0).astype(jnp.int32)),
            picked.at[k].set(ok))

  init = (jnp.zeros((n,), bool), jnp.zeros(features.shape[1:], jnp.float32),
          jnp.zeros((max_picks,), jnp.int32), jnp.zeros((max_picks,), bool))
  _, _, picks, picked = jax.lax.fori_loop(0, max_picks, pick, init)
  return picks, picked


def repack(store: ExemplarStore, per_class: jax.Array,
           keep: Optional[jax.Array] = None) -> ExemplarStore:
  """The store with stride m' = per_class (≤ the current m): group g's first
  min(keep, m') exemplars (keep None: m') move to slots [g·m', g·m' + ...);
  the number of groups is unchanged."""
  k = store.y.shape[0]
  keep = per_class if keep is None else jnp.minimum(keep, per_class)
  s = jnp.arange(k)
  g, r = s // jnp.maximum(per_class, 1), s % jnp.maximum(per_class, 1)
  src = jnp.clip(g * store.per_class + r, 0, k - 1)
  ok = ((per_class > 0) & (g < store.num_classes) & (r < keep)
        & (r < store.per_class) & store.valid[src])
  return store._replace(x=store.x[src], y=jnp.where(ok, store.y[src], 0),
                        valid=ok, per_class=jnp.asarray(per_class, jnp.int32))


def add_classes(store: ExemplarStore, x: jax.Array, labels: jax.Array,
                picks: jax.Array, picked: jax.Array) -> ExemplarStore:
  """Writes C new classes as groups G .. G + C − 1 at the current stride m.

  Args:
    x: [N, *input_shape] the rows the picks index.
    labels: [C] int class label of each new class.
    picks, picked: [C, P] `herd`'s output per class (picked: at most m a row).

  Returns:
    The store with G + C groups (the caller chose m ≤ K / (G + C)).
  """
  k = store.y.shape[0]
  c, p = picks.shape
  group = store.num_classes + jnp.arange(c)[:, None]
  slot = group * store.per_class + jnp.arange(p)[None, :]
  slot = jnp.where(picked & (jnp.arange(p)[None, :] < store.per_class), slot, k)
  slot = slot.reshape(-1)  # k: out of range, dropped
  return store._replace(
      x=store.x.at[slot].set(x[picks.reshape(-1)].astype(store.x.dtype), mode="drop"),
      y=store.y.at[slot].set(jnp.repeat(labels.astype(jnp.int32), p), mode="drop"),
      valid=store.valid.at[slot].set(True, mode="drop"),
      num_classes=store.num_classes + c)


def sample_per_group(store: ExemplarStore, key: PRNGKey, num_groups: int
                     ) -> tuple[jax.Array, jax.Array]:
  """One exemplar of each group 0 .. num_groups − 1 (static), uniformly.

  Returns:
    (slots [num_groups] int32, ok [num_groups] bool: the group has exemplars;
    slot 0 where it has none).
  """
  counts = group_counts(store, num_groups)
  u = jax.random.uniform(key, (num_groups,))
  r = jnp.minimum(jnp.floor(u * counts).astype(jnp.int32), jnp.maximum(counts - 1, 0))
  ok = counts > 0
  return jnp.where(ok, jnp.arange(num_groups) * store.per_class + r, 0), ok


def normalize(features: jax.Array, axis: int = -1) -> jax.Array:
  """features / ‖features‖₂ along `axis` (0 stays 0)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(features), axis=axis, keepdims=True))
  return features / jnp.maximum(norm, 1e-12)


def class_means(features: jax.Array, store: ExemplarStore, num_classes: int,
                renormalize: bool = False) -> tuple[jax.Array, jax.Array]:
  """Mean feature of each class's exemplars.

  Args:
    features: [K, F] features of the store's slots.
    num_classes: static number of labels (0 .. num_classes − 1).
    renormalize: L2-normalise each mean (iCaRL's normalised features).

  Returns:
    (means [num_classes, F] (0 without exemplars), has [num_classes] bool).
  """
  w = store.valid.astype(jnp.float32)
  sums = jax.ops.segment_sum(features * w[:, None], store.y, num_segments=num_classes)
  counts = jax.ops.segment_sum(w, store.y, num_segments=num_classes)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  return (normalize(means) if renormalize else means), counts > 0


def nearest_mean_scores(features: jax.Array, means: jax.Array, allowed: jax.Array
                        ) -> jax.Array:
  """[B, O] −‖φ_b − μ_o‖₂ where allowed [O] (or [B, O]), −inf elsewhere.

  Args:
    features: [B, F] query features.
    means: [O, F] class means.
  """
  sq = (jnp.sum(jnp.square(features), 1)[:, None]
        - 2.0 * jnp.dot(features, means.T, precision=_HIGHEST)
        + jnp.sum(jnp.square(means), 1)[None, :])
  return jnp.where(allowed, -jnp.sqrt(jnp.maximum(sq, 0.0)), -jnp.inf)
