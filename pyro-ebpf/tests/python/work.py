"""pyro-ebpf Python test workload: CPU time split 1 : 2 : 3 by construction.

Usage: work.py SECONDS  (starts after a line on stdin)

`run` calls three functions with the same loop body and 1, 2 and 3 units of work: `work_a`
(module level), `Worker.work_b` (a method: class-qualified) and `other.work_c` (another file).
Their CPU shares are therefore 1/6, 2/6 and 3/6.
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


sys.stdin.readline()
run(float(sys.argv[1]))
