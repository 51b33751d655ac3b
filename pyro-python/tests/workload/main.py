"""pyro-python test workload: threads whose Python stacks are known by construction.

Usage: main.py idle|spin|busy

idle: three threads reach `block` on known call paths, print `ready` and sleep there.
spin: the same threads loop on the CPU inside `block` (same stacks, running).
busy: the main thread spins through four leaf functions (in fixed shares) forever.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helper  # noqa: E402  (another file: its frames must show helper.py)

PRINT = threading.Lock()


def block():
    with PRINT:
        print("ready", threading.current_thread().name, flush=True)
    if sys.argv[1] == "spin":
        x = 0
        while True:
            x += 1
    while True:
        time.sleep(3600)


class Shape:
    def area(self):
        return block()

    @classmethod
    def make(cls):
        return block()


def middle():
    return Shape().area()


def outer():
    return middle()


def spin(n):
    x = 0
    for i in range(n):
        x += i * i
    return x


def leaf_a():
    return spin(20000)


def leaf_b():
    return spin(20000)


class Busy:
    def leaf_c(self):
        return spin(20000)


def busy():
    b = Busy()
    while True:
        leaf_a()
        leaf_b()
        leaf_b()
        b.leaf_c()
        helper.leaf_d(spin)


if sys.argv[1] == "busy":
    print("ready", flush=True)
    busy()
else:
    threading.Thread(target=Shape.make, name="classmethod", daemon=True).start()
    threading.Thread(target=helper.in_other_file, args=(block,), name="other", daemon=True).start()
    outer()
