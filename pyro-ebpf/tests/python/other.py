"""The third function of work.py, in another file."""

UNIT = 40000


def work_c(units):
    x = 0
    for i in range(units * UNIT):
        x += i
    return x
