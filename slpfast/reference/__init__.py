"""Pure-PyTorch (or numpy) references of every op: the executable specification.

Fast implementations in ``kernels/`` and ``csrc/`` are tested against these.
"""
