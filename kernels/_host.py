"""Host-side integer helpers for the kernel launchers.

``triton.cdiv`` and ``triton.next_power_of_2`` are ``constexpr_function`` objects in triton 3.6:
each call from Python unwraps its arguments first, ~5 us on the CPU that launches our kernels
(measured on the 2-core dev machine). Attention launches several kernels per step on short
pose clips, where that adds up; these are plain Python for plain ints and defer to triton for
anything else (symbolic sizes under torch.compile).
"""
from __future__ import annotations

import contextlib

import torch
import triton


def cdiv(a, b):
    """ceil(a / b) for positive b."""
    return -(-a // b)


def next_pow2(n):
    """Smallest power of two >= n (1 for n <= 1)."""
    if type(n) is int:
        return 1 if n <= 1 else 1 << (n - 1).bit_length()
    return triton.next_power_of_2(n)


def on_device(device: torch.device):
    """Context in which launches go to ``device``: Triton launches on the *current* CUDA device
    (and its current stream), not on the tensors' one. Inputs on cuda:1 while cuda:0 is current
    would run there with cuda:1 pointers (an illegal address, or with peer access a race with
    cuda:1's stream). A no-op on the CPU and when ``device`` is already current."""
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        return torch.cuda.device(device)
    return contextlib.nullcontext()
