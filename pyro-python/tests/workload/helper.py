"""Functions in another file than main.py."""


def in_other_file(block):
    return block()


def leaf_d(spin):
    return spin(20000)
