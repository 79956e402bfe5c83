"""The overhead bench's CPU accounting: wrk's report read back, and a process tree's CPU from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks.proc_stats import process_tree, tree_cpu_by_process
from benchmarks.wrk_load import parse_wrk_output

WRK_REPORT = """Running 8s test @ http://127.0.0.1:41749
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.20ms    3.25ms  41.93ms   83.59%
    Req/Sec     2.17k   189.34     2.92k    70.00%
  Latency Distribution
     50%   14.00ms
     75%   16.10ms
     90%   19.48ms
     99%  850.00us
  17324 requests in 8.01s, 4.17MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   2161.42
Transfer/sec:    532.50KB
"""


def test_wrks_report_is_read_with_its_units() -> None:
    result = parse_wrk_output(WRK_REPORT)
    assert (result.requests, result.duration_s, result.p50_ms, result.p99_ms, result.errors) == (
        17324, 8.01, 14.0, 0.85, 15)
    assert result.throughput_rps == pytest.approx(17324 / 8.01)


@pytest.mark.parametrize("text", ["", WRK_REPORT.replace("  Latency Distribution", "").replace("     50%", "")])
def test_a_report_without_its_figures_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="wrk's output"):
        parse_wrk_output(text)


def test_a_process_trees_cpu_counts_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                              "while time.process_time() < end: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tree_cpu_by_process(os.getpid()).get(child.pid, 0.0) < 0.25:
            time.sleep(0.05)
        assert child.pid in process_tree(os.getpid())
        assert tree_cpu_by_process(os.getpid())[child.pid] >= 0.25
    finally:
        child.kill()
        child.wait()
