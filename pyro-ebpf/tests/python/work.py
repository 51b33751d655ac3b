"""pyro-ebpf Python test workload: CPU time split 1 : 2 : 3 by construction, in long phases.

Usage: work.py SECONDS [PHASE_MS]  (starts after a line on stdin)

`run` calls three functions with the same loop body and 1, 2 and 3 units of work: `work_a`
(module level), `Worker.work_b` (a method: class-qualified) and `other.work_c` (another file).
Their CPU shares are therefore 1/6, 2/6 and 3/6. With PHASE_MS, a unit is sized (once, before
the start) to take about that many milliseconds, so each phase spans many sampling periods and
a sampling frequency cannot alias with the loop.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import other  # noqa: E402  (another file: its frames must show other.py)

UNIT = 40000


def work_a(units):
    x = 0
    for i in range(units * UNIT):
        x += i
    return x


class Worker:
    def work_b(self, units):
        x = 0
        for i in range(units * UNIT):
            x += i
        return x


def run(seconds):
    w = Worker()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        work_a(1)
        w.work_b(2)
        other.work_c(3)


def unit_for(phase_ms):
    """Iterations of the loop body that take about `phase_ms` of CPU here."""
    n = 200000
    start = time.process_time()
    x = 0
    for i in range(n):
        x += i
    spent = max(time.process_time() - start, 1e-4)
    return max(1000, int(n * phase_ms / 1000.0 / spent))


if len(sys.argv) > 2:
    UNIT = other.UNIT = unit_for(float(sys.argv[2]))
sys.stdin.readline()
run(float(sys.argv[1]))
