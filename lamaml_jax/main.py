r"""Runs one continual-learning experiment.

  python -m lamaml_jax.main                      # La-MAML on mnist5k_rotations
  python -m lamaml_jax.main --method=lamaml --dataset=cifar100 --setting=single_pass
  python -m lamaml_jax.main --method=cmaml --config.num_tasks=3 --config.seed=1
  python -m lamaml_jax.main --config=configs/lamaml.py:cifar100,multi_pass,appendix
  srun python -m lamaml_jax.main --distributed --num_seeds=8 ...  # over processes

`--method/--dataset/--setting` select `configs/<method>.py` with argument
'<dataset>,<setting>'; `--config=FILE:ARG` names a config file directly.
`--config.KEY=VALUE` overrides any field (`--config.learner.alpha_init=0.1`).
Outputs go to --workdir (default runs/<method>_<dataset>_<setting>_seed<seed>);
re-running the same command resumes from its newest checkpoint.
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the imports below: --timeline counts them

import contextlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import functools
import os
import sys
import traceback
from typing import NoReturn, Optional

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lamaml_jax import cli
from lamaml_jax import timeline as timeline_lib
from lamaml_jax import train
from lamaml_jax.learners import METHODS

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")
_METHODS = METHODS

METHOD = flags.DEFINE_enum("method", "lamaml", _METHODS, "Learning method.")
DATASET = flags.DEFINE_string(
    "dataset", "mnist5k_rotations",
    "Benchmark: mnist5k_rotations, mnist5k_permutations, mnist5k_many_permutations, "
    "mnist5k_split, mnist_rotations, mnist_permutations, mnist_many_permutations, cifar100, "
    "tinyimagenet; synthetic_cifar100 and synthetic_tinyimagenet (random pixels of "
    "the real shapes, for speed runs).")
SETTING = flags.DEFINE_enum(
    "setting", None, ["single_pass", "multi_pass"],
    "single_pass (MNIST's only setting) or multi_pass; default: the dataset's.")
SEED = flags.DEFINE_integer("seed", None, "Random seed (overrides config.seed).")
NUM_SEEDS = flags.DEFINE_integer(
    "num_seeds", None, "Train seeds seed..seed+N-1 as one vmapped program "
    "(overrides config.num_seeds); see also --config.grid.")
WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Delete a different run found in --workdir and start afresh.")
COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", cli.DEFAULT_CACHE_DIR,
    "JAX's persistent compilation cache: a run whose programs were compiled before "
    "(other seeds, a resume, a rerun) loads them instead of compiling (seconds of "
    "a 20-task MNIST run). Empty: off.")
TIMELINE = flags.DEFINE_string(
    "timeline", None, "Write where the run's wall time went (imports, build, "
    "compilation, each phase of the loop, outputs) as JSON to this file; "
    "benchmarks/run_timeline.py tabulates it.")
DISTRIBUTED = cli.define_distributed_flags()
flags.adopt_module_key_flags(cli)  # --helpshort lists them with this module's


def config_file_from_argv(argv: list[str]) -> str:
  """'configs/<method>.py:<dataset>[,<setting>]' from the selection flags in argv."""
  probe = flags.FlagValues()
  flags.DEFINE_string("method", "lamaml", "", flag_values=probe)
  flags.DEFINE_string("dataset", "mnist5k_rotations", "", flag_values=probe)
  flags.DEFINE_string("setting", None, "", flag_values=probe)
  probe(argv, known_only=True)
  if probe.method not in _METHODS:
    return ""  # let the enum flag report the error with the valid choices
  arg = probe.dataset + (f",{probe.setting}" if probe.setting else "")
  return os.path.join(_CONFIG_DIR, f"{probe.method}.py") + ":" + arg


def main(argv, config_flag, cli_argv):
  timeline = timeline_lib.Timeline(origin=STARTED) if TIMELINE.value else None
  if timeline:
    timeline.add("imports_and_flags", time.perf_counter() - STARTED, STARTED)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cli.quiet_libraries()
  cli.start_distributed(DISTRIBUTED)  # before anything asks JAX for its devices
  with clear_config_errors(cli_argv):
    config = config_flag.value
    config.get("method")  # ml_collections defers a failed load to the first access
  if SEED.value is not None:
    config.seed = SEED.value
  if NUM_SEEDS.value is not None:
    config.num_seeds = NUM_SEEDS.value
  name = f"{config.method}_{config.dataset}_{config.setting}_seed{config.seed}"
  if config.num_seeds > 1:
    name += f"x{config.num_seeds}"
  if config.grid:
    name += "_grid"
  workdir = WORKDIR.value or os.path.join("runs", name)
  cli.enable_compilation_cache(COMPILATION_CACHE_DIR.value)
  with cli.exit_on_run_errors():
    train.run(config, workdir, data_dir=DATA_DIR.value, overwrite=OVERWRITE.value,
              **({"timeline": timeline} if timeline else {}))
  if timeline:
    timeline.write(TIMELINE.value)
  logging.info("Outputs in %s (results: %s).", workdir,
               os.path.join(workdir, train.RESULTS_FILE))


def _define_config_flag(argv: list[str]):
  explicit = any(a.startswith("--config=") for a in argv)
  default = None if explicit else (config_file_from_argv(argv) or None)
  return config_flags.DEFINE_config_file(
      "config", default, "Config file and argument, FILE:ARG.", lock_config=True)


@contextlib.contextmanager
def clear_config_errors(argv: list[str]):
  """Turns flag and config errors into one line naming the fix, then exits."""
  try:
    yield
  except flags.Error as e:
    message = str(e)
    if "Traceback" in message:  # an error raised inside the config file
      message = message.strip().splitlines()[-1]
    sys.exit(f"error: {message}\nPass --helpshort to see the flags.")
  except (AttributeError, KeyError) as e:
    sys.exit(f"error: {unknown_field_message(e, argv)}")
  except (ValueError, TypeError) as e:
    sys.exit(f"error: {e}")
  except Exception as e:  # pylint: disable=broad-except
    if not (isinstance(e, (OSError, SyntaxError)) or _config_file_frames(e, argv)):
      raise  # not the config file's failure
    sys.exit(f"error: {config_file_message(e, argv)}")


def _config_path(argv: list[str]) -> Optional[str]:
  given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  return given[-1].split(":", 1)[0] if given else None


def _config_file_frames(error: BaseException, argv: list[str]) -> list[int]:
  """Line numbers of the --config file's frames in `error`'s traceback."""
  path = _config_path(argv)
  return [f.lineno for f in traceback.extract_tb(error.__traceback__)
          if path and os.path.abspath(f.filename) == os.path.abspath(path)]


def config_file_message(error: Exception, argv: list[str]) -> str:
  """One line for a --config file that cannot be loaded (missing, unreadable,
  not valid Python)."""
  given = _config_path(argv)
  path = given or "the config file"
  if given and not os.path.exists(path):
    return (f"--config file {path} does not exist; pass an existing one, e.g. "
            "--config=configs/lamaml.py:mnist5k_rotations, or pick one of configs/ "
            "with --method and --dataset.")
  if isinstance(error, SyntaxError):
    detail = f"{error.msg} (line {error.lineno})"
  else:
    text = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {text[-1].strip() if text else ''}"
    lines = _config_file_frames(error, argv)
    if lines:
      detail += f" (line {lines[-1]})"
  return f"--config file {path} cannot be loaded: {detail}. Fix it or pass another file."


def unknown_field_message(error: Exception, argv: list[str]) -> str:
  """One line for a misspelled --config.FIELD: the field, ml_collections'
  suggestion if it has one, and where the valid fields are listed."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]  # ml_collections wraps the KeyError in an AttributeError
  text = str(error.args[0]) if error.args else str(error)
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
  field = lines[0].strip("'\"") if lines else "?"
  hint = f" {' '.join(lines[1:])}" if len(lines) > 1 else ""
  overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
  return (f"unknown config field '{field}' in {', '.join(overrides) or 'the config'}."
          f"{hint} The fields and their types are in config.json of any run, or in "
          "configs/<method>.py.")


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv: list[str]) -> list[str]:
  with clear_config_errors(argv):
    return flags.FLAGS(argv)


def run_cli(argv: Optional[list[str]] = None) -> NoReturn:
  """`python -m lamaml_jax.main`: runs `main`, then ends the process with its
  exit status (`cli.exit_process`)."""
  argv = list(sys.argv if argv is None else argv)
  with clear_config_errors(argv):
    config = _define_config_flag(argv)
  try:
    app.run(functools.partial(main, config_flag=config, cli_argv=argv), argv=argv,
            flags_parser=parse_flags)
  except SystemExit as e:
    if any(a in HELP_FLAGS for a in argv[1:]) and e.code == 1:
      cli.exit_process(0)  # absl exits 1 after printing the help that was asked for
    cli.exit_process(e.code)


if __name__ == "__main__":
  run_cli()
