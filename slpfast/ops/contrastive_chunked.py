"""The ``chunked`` backend of ``contrastive_loss``: pure torch over row tiles, memory O(chunk * N + N * D).

It implements the four primitives that :class:`slpfast.ops.contrastive.ContrastiveFunction`
needs from a backend (the Triton backend in ``kernels/contrastive.py`` implements the same ones).
Notation: ``S = A @ B.T`` (unscaled similarities), ``s`` the logit scale, lse over rows::

    fwd_pair(X, Y, s)            -> lse_a (N,) = LSE_j(s*S_ij), lse_b (N,) = LSE_i(s*S_ij), S = X Y^T
    fwd_row(A, B, s)             -> lse (M,)   = LSE_j(s*S_ij),                      S = A B^T
    bwd_pair(X, Y, s, lse_a, lse_b, need_gtx) -> (G @ Y, G^T @ X, sum(G * S)),
                                       G_ij = exp(s S_ij - lse_a_i) + exp(s S_ij - lse_b_j) - 2 [i == j]
    bwd_row(A, B, s, lse, offset, need_pta) -> (P @ B, P^T @ A, sum(P * S)),
                                       P_ij = exp(s S_ij - lse_i) - [j == offset + i]

G and P are the gradients of the summed cross-entropies with respect to the logits: softmax
minus the one-hot labels (row i's positive is column i, or ``offset + i`` among gathered
columns). The labels are subtracted inside G, before any product, as autograd through
``F.cross_entropy`` does: G @ Y then is the gradient itself, not the difference of two nearly
equal sums (a trained model has P_ii ~ 1), which low-precision products would not resolve.
The second result is skipped (None) when its ``need_*`` flag is False (e.g. frozen text
features). ``*_pair`` serve the single-process loss (both directions share ``S``: forward 1 matmul, backward
3), ``*_row`` the distributed local loss (rows local, columns gathered). Every result is float32
(float64 for float64 inputs); ``s`` is a Python float. Only one ``(chunk, N)`` tile of logits
(plus a few temporaries of that size) exists at a time; the column statistics of ``fwd_pair``
are merged across tiles with the online max/sum rescaling of FlashAttention.
"""
from __future__ import annotations

import math

import torch

#: elements of one (chunk, N) logits tile (64 MiB of fp32; ~3 such temporaries live at once).
#: Measured on the 2-core CPU (N=4096/8192, D=512): tiles of >= 512 rows keep the matmuls
#: efficient; 1M-element tiles were ~2x slower, 4M-16M within noise of each other.
TILE_ELEMS = {"cpu": 1 << 24, "cuda": 1 << 24}


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def _chunk(rows: int, cols: int, device: torch.device, chunk: int | None) -> int:
    if chunk is None:
        chunk = TILE_ELEMS.get(device.type, 1 << 24) // max(cols, 1)
    return max(1, min(rows, chunk))


def fwd_pair(X: torch.Tensor, Y: torch.Tensor, s: float, chunk: int | None = None):
    """X, Y (N, D) -> (lse_a, lse_b), each (N,): row and column log-sum-exp of ``s * X @ Y.T``."""
    X, Ys = _acc(X), _acc(Y) * s  # the scale folded into one operand: no N x N multiply
    n = X.shape[0]
    step = _chunk(n, n, X.device, chunk)
    lse_a = X.new_empty(n)
    col_max = X.new_full((n,), -math.inf)
    col_sum = X.new_zeros(n)
    for r0 in range(0, n, step):
        logits = torch.mm(X[r0:r0 + step], Ys.T)
        lse_a[r0:r0 + step] = torch.logsumexp(logits, 1)
        new_max = torch.maximum(col_max, logits.amax(0))
        # rescale the running column sums to the new max, then add this tile (in place: no copy)
        col_sum.mul_(torch.exp(col_max - new_max)).add_(logits.sub_(new_max).exp_().sum(0))
        col_max = new_max
    return lse_a, col_max + col_sum.log()


def fwd_row(A: torch.Tensor, B: torch.Tensor, s: float, chunk: int | None = None) -> torch.Tensor:
    """A (M, D), B (K, D) -> lse (M,): row log-sum-exp of ``s * A @ B.T``."""
    A, Bs = _acc(A), _acc(B) * s
    m = A.shape[0]
    step = _chunk(m, B.shape[0], A.device, chunk)
    lse = A.new_empty(m)
    for r0 in range(0, m, step):
        lse[r0:r0 + step] = torch.logsumexp(torch.mm(A[r0:r0 + step], Bs.T), 1)
    return lse


def bwd_pair(X, Y, s: float, lse_a, lse_b, need_gtx: bool = True, chunk: int | None = None):
    """Recompute tiles of ``S = X @ Y.T``; return ``(G @ Y, G.T @ X, sum(G * S))`` (see module doc).
    ``need_gtx=False`` (Y needs no gradient) skips ``G.T @ X`` and returns None for it."""
    X, Y = _acc(X), _acc(Y)
    Ys = Y * s
    n = X.shape[0]
    step = _chunk(n, n, X.device, chunk)
    gy = torch.empty_like(X)
    gtx = torch.zeros_like(Y) if need_gtx else None
    ps = X.new_zeros(())
    for r0 in range(0, n, step):
        xr = X[r0:r0 + step]
        logits = torch.mm(xr, Ys.T)
        g = torch.sub(logits, lse_a[r0:r0 + step, None]).exp_()
        g.add_(torch.sub(logits, lse_b[None, :]).exp_())
        g.diagonal(r0).sub_(2.0)  # the labels of both directions: row r0 + i's positive is column r0 + i
        torch.mm(g, Y, out=gy[r0:r0 + step])
        if need_gtx:
            gtx.addmm_(g.T, xr)
        ps += torch.dot(g.view(-1), logits.view(-1))
    return gy, gtx, ps / s


def bwd_row(A, B, s: float, lse, offset: int = 0, need_pta: bool = True, chunk: int | None = None):
    """Recompute tiles of ``S = A @ B.T``; return ``(P @ B, P.T @ A, sum(P * S))`` (see module doc).
    ``need_pta=False`` (B needs no gradient) skips ``P.T @ A`` and returns None for it."""
    A, B = _acc(A), _acc(B)
    Bs = B * s
    m = A.shape[0]
    step = _chunk(m, B.shape[0], A.device, chunk)
    pb = torch.empty_like(A)
    pta = torch.zeros_like(B) if need_pta else None
    ps = A.new_zeros(())
    for r0 in range(0, m, step):
        ar = A[r0:r0 + step]
        logits = torch.mm(ar, Bs.T)
        p = torch.sub(logits, lse[r0:r0 + step, None]).exp_()
        p.diagonal(offset + r0).sub_(1.0)  # the label: row r0 + i's positive is column offset + r0 + i
        torch.mm(p, B, out=pb[r0:r0 + step])
        if need_pta:
            pta.addmm_(p.T, ar)
        ps += torch.dot(p.view(-1), logits.view(-1))
    return pb, pta, ps / s
