"""Program lengths: fixed, or chosen so that no program outlasts the bound."""
import pytest

from lamaml_jax import program_length


def _plan(lengths, task_steps, step_seconds, done=0):
  """The programs of one task, each timed at `step_seconds` a step."""
  out = []
  while done < task_steps:
    n = lengths.next(done, task_steps)
    out.append(n)
    lengths.measured(n, n * step_seconds)
    done += n
  return out


def test_fixed_lengths_and_the_last_remainder():
  lengths = program_length.ProgramLength(7, 20.0)
  assert lengths.capacity(20) == 7 and lengths.capacity(5) == 5
  assert _plan(lengths, 20, 1.0) == [7, 7, 6]


def test_auto_probes_one_step_then_runs_a_short_task_whole():
  lengths = program_length.ProgramLength(0, 20.0)
  assert lengths.capacity(100) == 100
  assert _plan(lengths, 100, 0.01) == [1, 99]
  assert _plan(lengths, 100, 0.01) == [100]  # the step time is known from now on


@pytest.mark.parametrize("task_steps,step_seconds,want", [
    (100, 0.6, [1, 24, 25, 25, 25]),   # 33 fit: the divisor 25, records at 25, 50, ..
    (97, 0.6, [1, 32, 33, 31]),        # prime: no divisor near 33, so 33 unaligned
    (250, 0.1, [1, 124, 125]),         # 200 fit: the divisor 125
    (10, 50.0, [1] * 10),              # one step outlasts the bound: one a program
])
def test_auto_programs_fit_the_bound_and_align(task_steps, step_seconds, want):
  lengths = program_length.ProgramLength(0, 20.0)
  plan = _plan(lengths, task_steps, step_seconds)
  assert plan == want
  assert sum(plan) == task_steps
  assert all(n * step_seconds <= 20.0 for n in plan if n > 1)


def test_a_resumed_process_probes_then_realigns():
  lengths = program_length.ProgramLength(0, 20.0)
  assert _plan(lengths, 100, 0.6, done=60) == [1, 14, 25]


@pytest.mark.parametrize("steps,seconds", [(-1, 20.0), (0, 0.0), (0, float("inf")),
                                           (0, float("nan"))])
def test_invalid_settings_are_refused(steps, seconds):
  with pytest.raises(ValueError):
    program_length.ProgramLength(steps, seconds)
