"""Timeline: phases accumulate wall time in the order first met."""
import subprocess
import sys
import time

from absl.testing import absltest

from lamaml_jax import timeline as timeline_lib


class TimelineTest(absltest.TestCase):

  def test_spans_accumulate_per_name_in_first_met_order(self):
    t = timeline_lib.Timeline()
    for _ in range(3):
      with t.span("b"):
        time.sleep(0.01)
    with t.span("a"):
      with t.span("inner"):  # nested spans count in both
        time.sleep(0.02)
    t.add("c", 1.5)
    phases = t.phases()
    self.assertEqual([p["phase"] for p in phases], ["b", "a", "inner", "c"])
    by_name = {p["phase"]: p for p in phases}
    self.assertEqual(by_name["b"]["calls"], 3)
    self.assertBetween(by_name["b"]["seconds"], 0.03, 1.0)
    self.assertGreaterEqual(by_name["a"]["seconds"], by_name["inner"]["seconds"])
    self.assertEqual(by_name["c"]["seconds"], 1.5)
    self.assertLessEqual(by_name["b"]["first_at_s"], by_name["a"]["first_at_s"])

  def test_a_span_that_raises_is_still_counted(self):
    t = timeline_lib.Timeline()
    with self.assertRaises(ValueError):
      with t.span("failing"):
        raise ValueError
    self.assertEqual(t.phases()[0]["calls"], 1)

  def test_no_timeline_records_nothing(self):
    with timeline_lib.NO_TIMELINE.span("x"):
      pass
    timeline_lib.NO_TIMELINE.add("y", 1.0)
    self.assertEqual(timeline_lib.NO_TIMELINE.phases(), [])

  def test_breakdown_derives_other_and_interpreter_time(self):
    def trial(compile_s, run_s, total, wall):
      return {"phases": [{"phase": "compile_train_program", "seconds": compile_s,
                          "calls": 1},
                         {"phase": "train_program", "seconds": run_s, "calls": 20}],
              "total_s": total, "process_wall_s": wall}
    out = timeline_lib.breakdown(
        [trial(4.0, 7.0, 9.0, 10.0), trial(5.0, 8.0, 9.5, 10.0), trial(3.0, 6.0, 9.0, 11.0)])
    rows = {r["phase"]: r for r in out["phases"]}
    self.assertEqual(rows["compile_train_program"]["seconds"], 4.0)
    self.assertTrue(rows["compile_train_program"]["background"])
    self.assertEqual(rows["train_program"]["seconds"], 7.0)
    # other = total - foreground phases: 2.0, 1.5, 3.0 -> median 2.0
    self.assertEqual(rows["other"]["seconds"], 2.0)
    # interpreter = wall - total: 1.0, 0.5, 2.0 -> median 1.0
    self.assertEqual(rows["interpreter_and_exit"]["seconds"], 1.0)
    self.assertEqual(out["process_wall_s_median"], 10.0)

  def test_timed_process_times_the_command_and_names_it_when_it_fails(self):
    now, calls = [10.0], []

    def fake_run(cmd, cwd=None, **kwargs):
      calls.append((cmd, cwd, kwargs))
      now[0] += 2.5
      return subprocess.CompletedProcess(cmd, 0 if cmd[0] == "ok" else 3, "", "disk full")

    wall = timeline_lib.timed_process(("ok", "--flag"), "/w", run=fake_run,
                                      clock=lambda: now[0])
    self.assertEqual(wall, 2.5)
    self.assertEqual(calls[0][:2], (["ok", "--flag"], "/w"))
    self.assertTrue(calls[0][2]["capture_output"])
    with self.assertRaisesRegex(RuntimeError, r"bad --x failed \(exit 3\):\ndisk full"):
      timeline_lib.timed_process(["bad", "--x"], run=fake_run, clock=lambda: now[0])

  def test_timed_process_runs_a_real_process(self):
    wall = timeline_lib.timed_process([sys.executable, "-c", "import time; time.sleep(0.2)"])
    self.assertBetween(wall, 0.2, 30.0)
    with self.assertRaisesRegex(RuntimeError, "exit 4"):
      timeline_lib.timed_process([sys.executable, "-c", "raise SystemExit(4)"])


if __name__ == "__main__":
  absltest.main()
