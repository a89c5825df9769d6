"""Host-side integer helpers for the kernel launchers.

``triton.cdiv`` and ``triton.next_power_of_2`` are ``constexpr_function`` objects in triton 3.6:
each call from Python unwraps its arguments first, ~5 us on the CPU that launches our kernels
(measured on the 2-core dev machine). Attention launches several kernels per step on short
pose clips, where that adds up; these are plain Python for plain ints and defer to triton for
anything else (symbolic sizes under torch.compile).
"""
from __future__ import annotations

import triton


def cdiv(a, b):
    """ceil(a / b) for positive b."""
    return -(-a // b)


def next_pow2(n):
    """Smallest power of two >= n (1 for n <= 1)."""
    if type(n) is int:
        return 1 if n <= 1 else 1 << (n - 1).bit_length()
    return triton.next_power_of_2(n)
