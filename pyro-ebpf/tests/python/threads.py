"""pyro-ebpf Python test workload: two threads, each with its own call path.

Usage: threads.py SECONDS  (starts after a line on stdin)

`hasher` runs `hash_outer` -> `hash_leaf`, which hashes a 64 MiB buffer (about 0.1 s) with SHA-256: CPython
releases the GIL while it hashes, so this thread spends its time on the CPU without the GIL.
`spinner` runs `spin_outer` -> `spin_leaf`, a pure Python loop that holds the GIL. The main
thread only waits. Each thread burns one CPU, so each has about half of the CPU time; a profiler
that took the Python stack of the GIL holder (or of the wrong thread) would show the spinner's
frames on the hasher's samples.
"""
import hashlib
import sys
import threading
import time

BUF = b"x" * (64 << 20)


def hash_leaf():
    return hashlib.sha256(BUF).digest()


def hash_outer(deadline):
    while time.monotonic() < deadline:
        hash_leaf()


def spin_leaf():
    x = 0
    for i in range(20000):
        x += i
    return x


def spin_outer(deadline):
    while time.monotonic() < deadline:
        spin_leaf()


sys.stdin.readline()
deadline = time.monotonic() + float(sys.argv[1])
threads = [
    threading.Thread(target=hash_outer, args=(deadline,), name="hasher"),
    threading.Thread(target=spin_outer, args=(deadline,), name="spinner"),
]
for t in threads:
    t.start()
for t in threads:
    t.join()
