"""What the command-line entry points share: the compilation cache and the
one-line reports of a run's failures.

  enable_compilation_cache(directory)
  quiet_libraries()
  distributed_flags = define_distributed_flags(); start_distributed(distributed_flags)
  with exit_on_run_errors(): train.run(...)
  exit_process(code)  # sys.exit(code) without the interpreter's teardown
"""
from __future__ import annotations

import atexit
import contextlib
import logging as std_logging
import os
import sys
import threading
from typing import NoReturn, Union

from absl import flags
from absl import logging

from lamaml_jax import checkpointing
from lamaml_jax import distributed
from lamaml_jax import io_utils
from lamaml_jax import train

DEFAULT_CACHE_DIR = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lamaml_jax", "xla")


def enable_compilation_cache(directory: str) -> None:
  """Points JAX's persistent compilation cache at `directory` ('' leaves it off)."""
  if directory:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", directory)
    # Every program: the init and evaluation programs compile in 0.3-0.7 s,
    # reading one back takes milliseconds.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def exit_process(code: Union[int, str, None] = 0) -> NoReturn:
  """Ends the process as `sys.exit(code)` would, less the interpreter's teardown.

  After a run, tearing the interpreter down (freeing JAX's, XLA's and
  matplotlib's objects module by module) takes about 0.5 s (BUILD.md) and does
  nothing a finished run needs. What the interpreter does before it is done
  here, in its order: non-daemon threads are joined and the `atexit` handlers
  run (logging's flush and close among them); then the standard streams are
  flushed and the process ends with `os._exit`. A string `code` is printed to
  stderr and exits with status 1, as with `sys.exit`.
  """
  if code is None:
    status = 0
  elif isinstance(code, int):
    status = code
  else:
    print(code, file=sys.stderr)
    status = 1
  shutdown = getattr(threading, "_shutdown", None)  # the interpreter's own join
  if shutdown is not None and threading.current_thread() is threading.main_thread():
    shutdown()
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # a closed or broken pipe: nothing to keep
      pass
  os._exit(status)  # pylint: disable=protected-access


def define_distributed_flags() -> dict:
  """--distributed and the coordinator flags (`distributed.initialize`)."""
  return dict(
      distributed=flags.DEFINE_bool(
          "distributed", False,
          "Run over several processes (hosts), one per node or GPU: the members are "
          "sharded over all their devices and process 0 writes the outputs. The "
          "coordinates are detected on SLURM and Cloud TPU, or given by "
          "--coordinator_address, --num_processes and --process_id."),
      coordinator_address=flags.DEFINE_string(
          "coordinator_address", None, "With --distributed: HOST:PORT of process 0."),
      num_processes=flags.DEFINE_integer(
          "num_processes", None, "With --distributed: how many processes run."),
      process_id=flags.DEFINE_integer(
          "process_id", None, "With --distributed: this process's index, 0-based."))


def start_distributed(values: dict) -> None:
  """Joins the other processes if --distributed (exits with one line on a bad
  combination of flags)."""
  coordinates = [values[k].value for k in ("coordinator_address", "num_processes",
                                           "process_id")]
  if not values["distributed"].value:
    if any(v is not None for v in coordinates):
      sys.exit("error: --coordinator_address, --num_processes and --process_id need "
               "--distributed.")
    return
  try:
    distributed.initialize(*coordinates)
  except ValueError as e:
    sys.exit(f"error: {e}")
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("Process %d of %d; devices: %d local, %d in all.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


class _QuietLibraries(std_logging.Filter):
  """Drops orbax's INFO chatter (a paragraph per checkpoint) and its ERROR records
  (a traceback from each background thread of a failed write: the failure
  reaches the run as an exception, reported in one line) from the log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return "orbax" not in record.pathname or record.levelno == std_logging.WARNING


def quiet_libraries() -> None:
  """Installs `_QuietLibraries` on absl's log handler."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


@contextlib.contextmanager
def exit_on_run_errors():
  """Exits with one line on stderr naming the fix for a run's expected failures:
  bad input, divergence, unusable checkpoints, a locked or failing workdir (status
  1), or an interruption (128 + the signal)."""
  try:
    yield
  except (ValueError, train.DivergenceError, checkpointing.CheckpointError,
          io_utils.WorkdirLockedError) as e:
    sys.exit(f"error: {e}")  # once, on stderr (absl would log it a second time)
  except OSError as e:  # the file system failed: disk full, read-only, permissions
    logging.debug("The error in full:", exc_info=True)  # shown with --verbosity=1
    sys.exit(f"error: {io_utils.file_system_error_message(e)}")
  except train.Interrupted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)  # 143 for SIGTERM, 130 for SIGINT
