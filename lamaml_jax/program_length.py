"""How many steps each compiled training program of a run takes.

A Python signal handler cannot interrupt a running XLA program, so a preempted
run (SIGTERM from SLURM or Cloud TPU, then SIGKILL after a grace time of often
30 s) can stop cleanly only between programs. With `steps_per_program = 0`
(auto) no program is planned to outlast `max_program_seconds`: a process's
first program is one step (which measures the step time), and each later one
is the largest divisor d of the task's steps with d steps of the last measured
time within the bound (or the bound itself when no divisor comes within half of
it), shortened so that programs end on multiples of d (the logs' records then
fall on the same steps in every task). A run whose tasks take
less than the bound (the MNIST benchmarks) trains each task as one program after
its one-step probe. Programs of any length run one executable
(`task_program.make_train_program(dynamic_length=True)`), so choosing lengths
compiles nothing, and results do not depend on them.
"""
from __future__ import annotations

from typing import Optional


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


class ProgramLength:
  """Plans program lengths: fixed `steps_per_program`, or auto (0) from timing.

  Attributes:
    step_seconds: the last measured seconds per step (None before any program).
  """

  def __init__(self, steps_per_program: int, max_program_seconds: float):
    if steps_per_program < 0:
      raise ValueError(f"steps_per_program must be >= 0 (0: chosen from the step "
                       f"time, see max_program_seconds), got {steps_per_program}.")
    if not 0 < max_program_seconds < float("inf"):
      raise ValueError("max_program_seconds must be a finite number > 0, got "
                       f"{max_program_seconds}.")
    self.fixed = steps_per_program
    self.max_seconds = max_program_seconds
    self.step_seconds: Optional[float] = None

  def capacity(self, task_steps: int) -> int:
    """The static length a task's program is compiled for."""
    return min(self.fixed, task_steps) if self.fixed else task_steps

  def next(self, done: int, task_steps: int) -> int:
    """Steps of the next program of a task of `task_steps` steps, `done` of them run."""
    remaining = task_steps - done
    if self.fixed:
      return min(self.fixed, remaining)
    if self.step_seconds is None:
      return 1
    k = max(1, min(task_steps, int(self.max_seconds / max(self.step_seconds, 1e-9))))
    d = max(d for d in divisors(task_steps) if d <= k)
    if 2 * d <= k:  # no divisor near the bound (a prime task length): unaligned
      d = k
    return min(remaining, d - done % d)

  def measured(self, steps: int, seconds: float) -> None:
    """Records that a program of `steps` steps ran in `seconds`."""
    if steps > 0:
      self.step_seconds = seconds / steps
