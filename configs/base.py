"""The generic part of every config (benchmark, stream, run settings) and the
`Cells` table each method's config file fills with only what differs.

A config file `configs/<method>.py` defines `CELLS = base.Cells(...)` and
`get_config(arg)`, with arg = 'dataset[,setting[,source]]':
  dataset  mnist5k_rotations, mnist5k_permutations, mnist5k_many_permutations,
           mnist5k_split (offline), mnist_rotations, mnist_permutations,
           mnist_many_permutations, cifar100, tinyimagenet; synthetic_cifar100 /
           synthetic_tinyimagenet (random pixels, configured as the benchmark
           they imitate);
  setting  single_pass (MNIST's only setting) or multi_pass (CIFAR-100 and
           TinyImageNet default);
  source   'script' (default): the official run_experiments.sh flags, which
           produced the paper's figures; 'appendix': the appendix's Tables 5/6
           where they differ.
Cells are keyed by (family, setting): family is the MNIST stream kind
('rotations', 'permutations', 'many_permutations'; the mnist5k_* stand-ins share
their full-MNIST cell's values) or 'cifar100' / 'tinyimagenet'. Paper figures
are keyed by the real dataset name, so the offline stand-ins have none.

mnist5k_split (5 tasks of 2 digit classes, task-incremental heads; not in the
paper) is single-pass, and a method's cell there is its Rotations cell, values
and run settings alike (our own choice, stated here once, so that every method
runs on it as on the other MNIST streams), unless the method has a cell of its
own keyed ('split', 'single_pass'): iCaRL, which needs task-incremental heads
and so has no Rotations cell.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import ml_collections
from ml_collections import config_dict

from lamaml_jax import learners

MNIST = ("mnist5k_rotations", "mnist5k_permutations", "mnist5k_many_permutations",
         "mnist_rotations", "mnist_permutations", "mnist_many_permutations")
SPLIT = "mnist5k_split"  # single pass; each method's Rotations cell (docstring)
IMAGES = ("cifar100", "tinyimagenet")
DATASETS = MNIST + (SPLIT,) + IMAGES
SYNTHETIC = {"synthetic_cifar100": "cifar100", "synthetic_tinyimagenet": "tinyimagenet"}
SETTINGS = ("single_pass", "multi_pass")
SOURCES = ("script", "appendix")
MNIST_FAMILIES = ("rotations", "permutations", "many_permutations")

Key = tuple[str, str]  # (family, setting)


def family(dataset: str) -> str:
  """'rotations' for mnist5k_rotations and mnist_rotations; the real benchmark's
  name for image datasets and their synthetic stand-ins."""
  if dataset in MNIST:
    return dataset.split("_", 1)[1]
  if dataset == SPLIT:
    return "rotations"  # its cells are the Rotations cells (module docstring)
  return SYNTHETIC.get(dataset, dataset)


def single_pass_only(dataset: str) -> bool:
  return dataset in MNIST or dataset == SPLIT


def parse_arg(arg: str, default_dataset: str = "mnist5k_rotations"
              ) -> tuple[str, str, str]:
  """'dataset[,setting[,source]]' -> (dataset, setting, source), validated."""
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  dataset = parts[0] if parts else default_dataset
  if dataset not in DATASETS and dataset not in SYNTHETIC:
    raise ValueError(f"Unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}.")
  default_setting = "single_pass" if single_pass_only(dataset) else "multi_pass"
  setting = parts[1] if len(parts) > 1 else default_setting
  if setting not in SETTINGS:
    raise ValueError(f"Unknown setting {setting!r}; valid: {', '.join(SETTINGS)}.")
  if single_pass_only(dataset) and setting != "single_pass":
    raise ValueError(f"{dataset} is a single-pass benchmark (1 epoch); the paper has "
                     "no multi-pass MNIST cell.")
  source = parts[2] if len(parts) > 2 else "script"
  if source not in SOURCES:
    raise ValueError(f"Unknown hyperparameter source {source!r}; valid: {SOURCES}.")
  return dataset, setting, source


def run_config(method: str, dataset: str, setting: str, source: str
               ) -> ml_collections.ConfigDict:
  """Everything but the learner: benchmark, stream and run settings."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.dataset = dataset
  c.setting = setting
  c.hparams_source = source
  c.seed = 0
  c.num_seeds = 1               # members seed, seed+1, ...: one vmapped program
  c.grid = ""                   # e.g. 'alpha_init=0.03,0.1;opt_lr=0.1,0.3' (x seeds)
  # Members run 'vmap'ped (fast on GPU/TPU) or 'map'ped one after another (bitwise
  # equal to single runs); 'auto': map on CPU, vmap elsewhere.
  c.member_batching = "auto"
  # Devices the members are sharded over (0: every visible device, at most one
  # per member; lamaml_jax/members.py's Placement): M is padded to a multiple.
  c.member_devices = 0
  c.num_tasks = config_dict.placeholder(int)         # None: the benchmark's
  c.samples_per_task = config_dict.placeholder(int)  # None: the benchmark's
  # 'tasks': one task after another; 'iid': all tasks shuffled together
  # (lamaml_jax/schedules.py), with the official loader's batch composition
  # (iid_tasks_per_batch, 0: off) and epoch length (iid_steps_per_epoch, 0: a pass).
  c.stream = learners.method(method).schedule
  c.iid_tasks_per_batch = 0
  c.iid_steps_per_epoch = 0
  # Class order of the task-incremental splits: 'numpy' (np.random.default_rng)
  # or 'official' (Python's random.seed(seed); random.shuffle: the official run's
  # task compositions, seed for seed).
  c.class_order = "numpy"
  # Split benchmarks: 'task' (task-incremental heads, the paper's) or
  # 'class_incremental' (one head over every class seen so far; lamaml_jax/heads.py).
  c.heads = "task"
  c.batch_size = 10
  c.eval_batch_size = 1000
  # The official MNIST evaluation scores samples 0..N-2 of each task and divides
  # by N (main.py's eval_tasks; BASELINES.md §0): set in the full-MNIST paper
  # cells, off elsewhere (the mnist5k stand-ins report exact accuracies).
  c.eval_drop_last = dataset in MNIST and not dataset.startswith("mnist5k")
  # Steps per compiled training program; 0: chosen from the measured step time
  # so that no program outlasts max_program_seconds (a preempted run stops
  # cleanly between programs; lamaml_jax/program_length.py).
  c.steps_per_program = 0
  c.max_program_seconds = 20.0
  # A checkpoint after a program or task once this many minutes passed since the
  # last (0: after every one), and after the last task.
  c.checkpoint_every_minutes = 10.0
  c.keep_checkpoints = 2
  # Evaluation probes beside accuracy, comma-separated (off by default):
  # 'alignment', the gradient alignment of old and arriving tasks (appendix D;
  # lamaml_jax/alignment.py), each task's gradient on its first probe_samples
  # training samples.
  c.probes = ""
  c.probe_samples = 100
  c.paper_ra = config_dict.placeholder(float)
  if single_pass_only(dataset):
    c.arch, c.augment, c.epochs = "mlp", False, 1
  else:
    c.arch = "cifar_cnn" if family(dataset) == "cifar100" else "tinyimagenet_cnn"
    c.augment = True
    c.epochs = 10 if setting == "multi_pass" else 1
  return c


def mnist_cells() -> list[Key]:
  """The (family, setting) keys of the three MNIST streams (single pass)."""
  return [(f, "single_pass") for f in MNIST_FAMILIES]


def _lookup(table: Mapping[Key, dict], key: Key) -> dict:
  return dict(table.get(key, {}))


@dataclasses.dataclass(frozen=True)
class Cells:
  """A method's paper cells: what its config says beyond `run_config`.

  Attributes:
    method: registered method name.
    hparams: its hyperparameter dataclass (defaults fill unmentioned fields).
    script: (family, setting) -> learner values of the official script; a cell
      exists iff it has an entry here.
    appendix: the same for the appendix's values, where they differ.
    run: (family, setting) -> run-level overrides (batch_size, epochs, stream).
    structure: (family, setting) -> learner values shared by all cells of a
      benchmark family (e.g. the La-MAML family's inner-loop layout), applied
      before `script`.
    paper_ra: (dataset, setting) -> the paper's RA (%) where the shared docs
      record it.
    default_dataset: dataset of `get_config('')`.
  """
  method: str
  hparams: type
  script: Mapping[Key, dict]
  appendix: Mapping[Key, dict] = dataclasses.field(default_factory=dict)
  run: Mapping[Key, dict] = dataclasses.field(default_factory=dict)
  structure: Optional[Callable[[str, str], dict]] = None
  paper_ra: Mapping[Key, float] = dataclasses.field(default_factory=dict)
  default_dataset: str = "mnist5k_rotations"

  def key(self, dataset: str, setting: str) -> Key:
    """The cell of (dataset, setting): its family's, or ('split', setting) on
    mnist5k_split where the method has such a cell (module docstring)."""
    if dataset == SPLIT and ("split", setting) in self.script:
      return ("split", setting)
    return (family(dataset), setting)

  def datasets(self) -> list[tuple[str, str]]:
    """Every (dataset, setting) with a cell, real datasets only."""
    return [(d, s) for d in DATASETS for s in SETTINGS
            if self.key(d, s) in self.script]

  def config(self, arg: str) -> ml_collections.ConfigDict:
    dataset, setting, source = parse_arg(arg, self.default_dataset)
    key = self.key(dataset, setting)
    if key not in self.script:
      raise ValueError(f"The paper has no {self.method} cell on {dataset} ({setting}); "
                       f"cells: {', '.join(f'{d},{s}' for d, s in self.datasets())}.")
    c = run_config(self.method, dataset, setting, source)
    for name, value in _lookup(self.run, key).items():
      c[name] = value
    c.paper_ra = self.paper_ra.get((dataset, setting))
    hp = {f.name: f.default for f in dataclasses.fields(self.hparams)}
    if self.structure is not None:
      hp.update(self.structure(*key))
    hp.update(self.script[key])
    if source == "appendix":
      hp.update(_lookup(self.appendix, key))
    c.learner = ml_collections.ConfigDict(
        {k: v for k, v in hp.items() if v is not None})
    # Optional fields keep their type (None or a number) as placeholders.
    for name, value in hp.items():
      if value is None:
        c.learner[name] = config_dict.placeholder(_optional_type(self.hparams, name))
    return c


def _optional_type(hparams: type, name: str) -> type:
  field = {f.name: f for f in dataclasses.fields(hparams)}[name]
  text = str(field.type)
  for t in (int, float, str, bool):
    if t.__name__ in text:
      return t
  return object
