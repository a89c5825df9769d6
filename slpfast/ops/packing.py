"""Padded <-> packed conversion of variable-length clips: ``pack_padded`` and ``unpack_packed``.

The data path and the encoder move between the padded form ``(B, T, *rest)`` with per-clip
lengths and the packed form ``(sum(lengths), *rest)`` with ``cu_seqlens``. Both ops are
differentiable (each is the other's backward) and work under ``torch.compile`` (fake
implementations are registered here).

Backends: ``extension`` (``torch.ops.slpfast`` from csrc/, CPU and CUDA) and ``eager``
(:mod:`slpfast.reference.packing`).
"""
from __future__ import annotations

import torch

from .. import _extension
from ..reference import packing as ref
from ._dispatch import Backend, Dispatcher
from ._validate import (check_cu_seqlens, check_int, check_lengths, check_same_device, check_tensor, fail,
                        lengths_to_cu_seqlens)

__all__ = ["pack_padded", "unpack_packed", "lengths_to_cu_seqlens"]

_LIB_LOADED = _extension.load().loaded

if _LIB_LOADED:

    @torch.library.register_fake("slpfast::pack_padded")
    def _pack_fake(padded, cu_seqlens, total):
        return padded.new_empty((total, *padded.shape[2:]))

    @torch.library.register_fake("slpfast::unpack_packed")
    def _unpack_fake(packed, cu_seqlens, max_len):
        return packed.new_empty((cu_seqlens.shape[0] - 1, max_len, *packed.shape[1:]))

    def _pack_setup(ctx, inputs, output):
        padded, cu, _ = inputs
        ctx.save_for_backward(cu)
        ctx.max_len = padded.shape[1]

    def _pack_backward(ctx, grad):
        (cu,) = ctx.saved_tensors
        return torch.ops.slpfast.unpack_packed(grad.contiguous(), cu, ctx.max_len), None, None

    def _unpack_setup(ctx, inputs, output):
        packed, cu, _ = inputs
        ctx.save_for_backward(cu)
        ctx.total = packed.shape[0]

    def _unpack_backward(ctx, grad):
        (cu,) = ctx.saved_tensors
        return torch.ops.slpfast.pack_padded(grad.contiguous(), cu, ctx.total), None, None

    torch.library.register_autograd("slpfast::pack_padded", _pack_backward, setup_context=_pack_setup)
    torch.library.register_autograd("slpfast::unpack_packed", _unpack_backward, setup_context=_unpack_setup)


def _ext_available() -> list[str]:
    return _extension.unavailable_reasons("cpu")


#: element sizes (bytes) the extension moves as opaque words (csrc/core/pack.h); complex128
#: (16 bytes), say, goes to the eager backend under ``auto``
EXT_ELEMENT_SIZES = (1, 2, 4, 8)


def _ext_supports(x: torch.Tensor, **_) -> list[str]:
    why = _extension.unavailable_reasons(x.device.type)
    if x.element_size() not in EXT_ELEMENT_SIZES:
        why = why + [f"elements of {x.element_size()} bytes ({str(x.dtype).replace('torch.', '')}) are not "
                     f"supported (the extension moves {'/'.join(map(str, EXT_ELEMENT_SIZES))}-byte words)"]
    return why


_PACK = Dispatcher("pack_padded", [
    Backend("extension", lambda x, cu, n: torch.ops.slpfast.pack_padded(x, cu, n), _ext_available, _ext_supports),
    Backend("eager", lambda x, cu, n: ref.pack_padded(x, cu, n)),
])
_UNPACK = Dispatcher("unpack_packed", [
    Backend("extension", lambda x, cu, n: torch.ops.slpfast.unpack_packed(x, cu, n), _ext_available, _ext_supports),
    Backend("eager", lambda x, cu, n: ref.unpack_packed(x, cu, n)),
])


def pack_rows(padded: torch.Tensor, cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """``pack_padded`` for callers that validated their inputs: no checks, no host sync.

    padded (B, T, *rest), cu_seqlens (B+1,) int32/int64, total = cu_seqlens[-1] -> (total, *rest).
    Differentiable. With the extension its backward is a gather (no scatter-add); without it
    (or on a device it was not built for, or for elements it does not move, e.g. complex128) a row-index gather in torch, which traces under
    torch.compile too (the eager pack backend loops over clips on the host).
    """
    if _extension.unavailable_reasons(padded.device.type) or padded.element_size() not in EXT_ELEMENT_SIZES:
        from ..reference.attention import padded_to_packed

        return padded_to_packed(padded, cu_seqlens, total)
    return torch.ops.slpfast.pack_padded(padded, cu_seqlens.to(torch.int64), total)


def unpack_rows(packed: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``unpack_packed`` for callers that validated their inputs: no checks, no host sync.

    packed (total, *rest), cu_seqlens (B+1,) int32/int64, max_len >= every length ->
    (B, max_len, *rest), zeros past each length. Differentiable; without the extension, as
    :func:`pack_rows`.
    """
    if _extension.unavailable_reasons(packed.device.type) or packed.element_size() not in EXT_ELEMENT_SIZES:
        from ..reference.attention import packed_to_padded

        return packed_to_padded(packed, cu_seqlens, max_len)
    return torch.ops.slpfast.unpack_packed(packed, cu_seqlens.to(torch.int64), max_len)


def pack_padded(padded: torch.Tensor, lengths: torch.Tensor, *, backend: str = "auto"):
    """Pack a padded batch.

    Args:
        padded: (B, T, *rest), any dtype.
        lengths: (B,) int32/int64, 0 <= lengths <= T.
    Returns:
        ``(packed, cu_seqlens)``: packed (sum(lengths), *rest) and cu_seqlens (B+1,) int32.
    """
    op = "pack_padded"
    check_tensor(op, "padded", padded, ndim=tuple(range(2, 9)))
    check_same_device(op, padded=padded, lengths=lengths)
    check_lengths(op, "lengths", lengths, padded.shape[0], padded.shape[1])
    cu = lengths_to_cu_seqlens(lengths.to(torch.int64), torch.int64)
    total = int(cu[-1])
    impl = _PACK.select(backend, x=padded)
    return impl.run(padded, cu, total), cu.to(torch.int32)


def unpack_packed(packed: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int | None = None, *,
                  backend: str = "auto") -> torch.Tensor:
    """Unpack to a zero-padded batch.

    Args:
        packed: (total, *rest), any dtype.
        cu_seqlens: (B+1,) int32/int64, starts at 0, non-decreasing, ends at total.
        max_len: T of the output; defaults to the longest sequence (costs a host sync on GPU).
    Returns:
        padded (B, max_len, *rest).
    """
    op = "unpack_packed"
    check_tensor(op, "packed", packed, ndim=tuple(range(1, 8)))
    check_same_device(op, packed=packed, cu_seqlens=cu_seqlens)
    check_cu_seqlens(op, "cu_seqlens", cu_seqlens, packed.shape[0])
    cu = cu_seqlens.to(torch.int64)
    longest = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
    if max_len is None:
        max_len = longest
    else:
        max_len = check_int(op, "max_len", max_len, 0)  # numpy ints taken; True and 2.0 refused
        if max_len < longest:
            fail(op, f"max_len must be an int >= the longest sequence ({longest}), got {max_len!r}")
    return _UNPACK.select(backend, x=packed).run(packed, cu, max_len)
