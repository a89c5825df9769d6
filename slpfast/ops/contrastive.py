"""``contrastive_loss``: symmetric sign-text InfoNCE (CLIP) with memory linear in the batch.

Math (``s = logit_scale``; rows of ``sign`` and ``text`` with the same index are positives)::

    L = 1/2 [ CE(s * sign @ text_all.T, labels) + CE(s * text @ sign_all.T, labels) ]

In one process ``*_all`` are the inputs themselves; under ``torch.distributed`` with
``gather=True`` they are the all-gathered batch (gradient: reduce-scatter), and
``labels = rank * N_local + arange(N_local)`` — open_clip's ``ClipLoss(local_loss=True,
gather_with_grad=True)``. Each rank then returns the loss of its own rows; the mean over ranks
equals the single-process loss over the concatenated batch, and the gradients that reach each
rank's inputs, averaged over ranks as DDP does, equal the single-process gradients.

Backends, fastest first (``backend="auto"`` takes the first that supports the input):

- ``triton``: fused kernels (``kernels/contrastive.py``): the forward keeps the logits on chip;
  the backward writes the logit gradient in row chunks of at most 256 MiB (operand dtype) and
  multiplies them with library matmuls; CUDA tensors. CPU tensors run it only in the Triton interpreter (``TRITON_INTERPRET=1`` set before
  triton is imported) and only when named (``backend="triton"``): the interpreter is for tests.
- ``chunked``: pure torch over row tiles with recomputation in the backward, memory
  O(chunk * N + N * D) (:mod:`slpfast.ops.contrastive_chunked`); the fast CPU path.
- ``eager``: the math of :mod:`slpfast.reference.contrastive`, materializing the N_local x N_global
  logits (float32).

Dtypes: float16/bfloat16/float32 everywhere (``chunked``/``eager`` also float64). Statistics
and the returned loss are float32 (float64 for float64 inputs); gradients come back in the
inputs' dtypes.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from . import contrastive_chunked as chunked
from . import distributed as ddp
from ._dispatch import Backend, Dispatcher
from ._first_order import first_order_only
from ._validate import check_same_device, check_tensor, describe, fail

__all__ = ["contrastive_loss"]

OP = "contrastive_loss"
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ContrastiveFunction(torch.autograd.Function):
    """Loss from per-row log-sum-exps; the backward recomputes tiles (never N x N in memory).

    ``engine`` is a module with ``fwd_pair, fwd_row, bwd_pair, bwd_row`` (see
    :mod:`slpfast.ops.contrastive_chunked` for their contract); ``backend`` its name, for the
    error of a double backward (first order only: :mod:`slpfast.ops._first_order`).
    ``sign_all``/``text_all`` None means single process (both directions share one similarity matrix); otherwise they are the
    gathered (N_global, D) batch and autograd carries their gradients back through the gather.
    The positive of local row i is column ``offset + i`` of the gathered batch (``offset =
    rank * N_local``; 0 in one process): the forward takes it from the local rows, the backward
    folds the labels into the engines' logit gradients at that column.
    """

    @staticmethod
    def forward(ctx, engine, backend: str, sign, text, sign_all, text_all, scale, s: float, offset: int):
        acc = torch.float64 if sign.dtype == torch.float64 else torch.float32
        n = sign.shape[0]
        diag = (sign.to(acc) * text.to(acc)).sum(1)  # unscaled positive similarities (N,)
        if sign_all is None:
            lse_a, lse_b = engine.fwd_pair(sign, text, s)
        else:
            lse_a = engine.fwd_row(sign, text_all, s)
            lse_b = engine.fwd_row(text, sign_all, s)
        loss = (lse_a.sum() + lse_b.sum() - 2.0 * s * diag.sum()) / (2 * n)
        ctx.save_for_backward(sign, text, sign_all, text_all, lse_a, lse_b, scale)
        ctx.engine, ctx.backend, ctx.s, ctx.single, ctx.offset = engine, backend, s, sign_all is None, offset
        ctx.scale_meta = (scale.dtype, scale.shape)
        return loss

    @staticmethod
    def backward(ctx, grad):
        sign, text, sign_all, text_all, lse_a, lse_b, scale = ctx.saved_tensors
        with torch.no_grad():
            grads = ContrastiveFunction._grads(ctx, grad, sign, text, sign_all, text_all, lse_a, lse_b)
        # under create_graph=True: a later double backward raises instead of silently giving None
        return first_order_only(OP, ctx.backend, grads, (grad, sign, text, sign_all, text_all, scale))

    @staticmethod
    def _grads(ctx, grad, sign, text, sign_all, text_all, lse_a, lse_b):
        eng, s = ctx.engine, ctx.s
        c = grad / (2 * sign.shape[0])
        cs = c * s
        # The engines fold the labels into the logit gradients (softmax minus one-hot), so their
        # products are the gradients up to the factor c * s, and sum(G * S) already holds the
        # positive pairs' -2 * sum_i S_ii. (G @ Y)-type products always run: they also give
        # sum(G * S) for the scale's gradient; the transposed products are skipped for inputs
        # that need no gradient (frozen features).
        # forward's inputs: (engine, backend, sign, text, sign_all, text_all, scale, s, offset)
        need_sign, need_text, need_sign_all, need_text_all = ctx.needs_input_grad[2:6]
        d_sign = d_text = d_sign_all = d_text_all = None
        if ctx.single:
            gy, gtx, ps = eng.bwd_pair(sign, text, s, lse_a, lse_b, need_gtx=need_text)
        else:
            gy, d_text_all, ps_a = eng.bwd_row(sign, text_all, s, lse_a, ctx.offset, need_pta=need_text_all)
            gtx, d_sign_all, ps_b = eng.bwd_row(text, sign_all, s, lse_b, ctx.offset, need_pta=need_sign_all)
            ps = ps_a + ps_b
            if d_sign_all is not None:
                d_sign_all = d_sign_all.mul_(cs).to(sign_all.dtype)
            if d_text_all is not None:
                d_text_all = d_text_all.mul_(cs).to(text_all.dtype)
        if need_sign:
            d_sign = gy.mul_(cs).to(sign.dtype)  # in place on the fp32 (M, D) result
        if need_text:
            d_text = gtx.mul_(cs).to(text.dtype)
        dtype, shape = ctx.scale_meta
        d_scale = (c * ps).to(dtype).reshape(shape)
        return None, None, d_sign, d_text, d_sign_all, d_text_all, d_scale, None, None


# ---------------------------------------------------------------------------------------------
# backends

def _triton_engine():
    from ..kernels import contrastive as kern  # imports triton: only when the backend is used

    return kern


def _triton_available() -> list[str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return [f"triton is not installed ({exc})"]
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return []
    return ["no CUDA GPU, and CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 set before "
            "triton is imported; for tests, used only when named)"]


def _triton_supports(sign, auto: bool, **_) -> list[str]:
    why = []
    if sign.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        why.append(f"dtype {sign.dtype} is not float16/bfloat16/float32")
    if sign.device.type == "cuda":
        return why
    if sign.device.type != "cpu":
        return why + [f"device {sign.device.type} is not cuda"]
    why_cpu = []
    if auto:
        why_cpu.append("CPU tensors run Triton only in the interpreter, which is for tests: it is "
                       "used only when named (backend='triton'); 'chunked' is the fast CPU path")
    elif not _triton_engine().INTERPRET:
        why_cpu.append("CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 before triton "
                       "is imported")
    if sign.dtype == torch.bfloat16:
        why_cpu.append("bfloat16 arithmetic is wrong in the Triton interpreter (CUDA only)")
    return why + why_cpu


def _run_engine(engine, backend: str):
    def run(sign, text, sign_all, text_all, scale, s, offset, **_):
        return ContrastiveFunction.apply(engine, backend, sign, text, sign_all, text_all, scale, s, offset)
    return run


def _run_triton(*args, **kw):
    return _run_engine(_triton_engine(), "triton")(*args, **kw)


def _run_eager(sign, text, sign_all, text_all, scale, s, offset, **_):
    """The reference math (:mod:`slpfast.reference.contrastive`), materializing the logits.

    Logits are float32 (float64 for float64 inputs). On CUDA, half inputs keep their matmul in
    half (as open_clip under autocast); CPU half matmuls are slow, so CPU inputs are upcast first.
    Peak memory ~4 fp32 N x N buffers (logits, two log-softmax outputs, their gradients).
    In one process the second direction is the transpose of the first (one matmul, as open_clip).
    """
    acc = torch.float64 if sign.dtype == torch.float64 else torch.float32
    # any one-element shape, e.g. (1,) or (1, 1, 1), and any float dtype: a 0-dim scale in the
    # logits' dtype (a (1,)-shaped one would broadcast the logits to 3-D, a float64 one would not
    # multiply float32 operands); the gradient flows back to the caller's shape and dtype
    scale = scale.reshape(()).to(acc)
    labels = torch.arange(sign.shape[0], device=sign.device) + offset
    if sign.device.type == "cuda" and sign.dtype in (torch.float16, torch.bfloat16):
        logits = lambda a, b: scale * (a @ b.T).to(acc)  # noqa: E731
    else:  # scale folded into the (N, D) operand: autograd then keeps no extra N x N copy for it
        logits = lambda a, b: (scale * a.to(acc)) @ b.to(acc).T  # noqa: E731
    if sign_all is None:
        logits_st = logits(sign, text)
        logits_ts = logits_st.T
    else:
        logits_st = logits(sign, text_all)
        logits_ts = logits(text, sign_all)
    return 0.5 * (F.cross_entropy(logits_st, labels) + F.cross_entropy(logits_ts, labels))


_DISPATCH = Dispatcher(OP, [
    Backend("triton", _run_triton, _triton_available, _triton_supports),
    Backend("chunked", _run_engine(chunked, "chunked")),
    Backend("eager", _run_eager),
])


# ---------------------------------------------------------------------------------------------
# public op

def _check_scale(logit_scale, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """-> (scale tensor with its autograd history, its value as a float). Reads one scalar to host.

    A Python number becomes a 0-dim tensor in the loss's accumulation dtype (float64 for
    float64 inputs, else float32): rounding 14.3 to float32 would cost float64 inputs ~1e-7."""
    if isinstance(logit_scale, (int, float, np.integer, np.floating)) and not isinstance(logit_scale, (bool, np.bool_)):
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        value = float(logit_scale)
        if math.isfinite(value) and value > torch.finfo(acc).max:
            # checked before the cast: the error below would otherwise report the rounded inf
            fail(OP, f"logit_scale {value!r} overflows the loss's {str(acc).replace('torch.', '')} "
                     f"(the multiplier exp(t), not t: expected ~1 to 100)")
        scale = torch.tensor(value, dtype=acc, device=device)
    elif isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1 or not logit_scale.is_floating_point():
            fail(OP, f"logit_scale must be a float or a floating tensor with one element, got "
                     f"{describe(logit_scale)}")
        if logit_scale.device != device:
            fail(OP, f"logit_scale is on {logit_scale.device} but sign is on {device}")
        scale = logit_scale
    else:
        fail(OP, f"logit_scale must be a float or a one-element tensor, got {type(logit_scale).__name__}")
    s = float(scale.detach().reshape(()))
    if not math.isfinite(s) or s <= 0:
        fail(OP, f"logit_scale must be finite and > 0 (it is the multiplier exp(t), not t), got {s}")
    return scale, s


def contrastive_loss(sign: torch.Tensor, text: torch.Tensor, logit_scale, *, gather: bool = True,
                     group=None, backend: str = "auto", normalize: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE between sign and text embeddings.

    Args:
        sign, text: (N_local, D) float16/bfloat16/float32/float64, same shape, dtype and device;
            row i of ``sign`` matches row i of ``text``. Expected L2-normalized (or pass
            ``normalize=True``).
        logit_scale: the multiplier ``s`` (already exponentiated: ``log_scale.exp()``), a
            one-element tensor (gets a gradient) or a float; finite and > 0.
        gather: under an initialized process group with world size > 1, gather the batch across
            ``group`` (local-loss formulation, see the module docstring). N_local must be equal
            on every rank: checked on CPU tensors always, on GPU on the first call per group and
            on every call with ``SLPFAST_DEBUG_DISTRIBUTED=1``. Argument errors (N_local = 0
            included) are raised before any collective, on the rank that has them: the other
            ranks then wait in the all-gather until the process group's timeout (10 min under
            ``slpfast.pretrain``), so feed every rank a fixed batch size (``drop_last=True``,
            as slpfast's loaders do when training).
        group: process group (default: the world).
        backend: ``"auto"``, ``"triton"``, ``"chunked"`` or ``"eager"``.
        normalize: L2-normalize both inputs first (``F.normalize``, differentiable, O(N * D);
            done in torch before the loss, not inside the kernels).
    Returns:
        0-dim float32 loss (float64 for float64 inputs): mean over this rank's rows.

    Non-finite embeddings: a NaN or inf anywhere in ``sign`` or ``text`` (or in another rank's
    rows, when gathering) makes the loss NaN (and its gradients NaN), on every backend. It is
    not checked here: that would cost a device->host sync per call; ``slpfast.train`` skips
    steps whose loss is not finite.

    Double backward (differentiating the gradients, e.g. a gradient penalty) is supported by
    ``eager`` only; ``triton`` and ``chunked`` raise a ``RuntimeError`` when it is attempted.
    """
    check_tensor(OP, "sign", sign, ndim=2, dtypes=FLOATS)
    check_tensor(OP, "text", text, ndim=2, dtypes=FLOATS)
    if text.shape != sign.shape:
        fail(OP, f"text must have the shape of sign (N_local, D)={tuple(sign.shape)}, got {describe(text)}")
    if text.dtype != sign.dtype:
        fail(OP, f"text must have the dtype of sign ({sign.dtype}), got {describe(text)}")
    check_same_device(OP, sign=sign, text=text)
    if sign.shape[0] == 0 or sign.shape[1] == 0:
        fail(OP, f"sign must have N_local >= 1 rows and D >= 1 columns, got {describe(sign)}")
    scale, s = _check_scale(logit_scale, sign.device, sign.dtype)
    for name, flag in (("gather", gather), ("normalize", normalize)):
        if not isinstance(flag, bool):  # "no", 0.0 ... would silently mean something
            fail(OP, f"{name} must be a bool, got {type(flag).__name__} {flag!r}")
    if normalize:
        sign, text = F.normalize(sign, dim=1), F.normalize(text, dim=1)

    sign_all = text_all = None
    offset = 0
    info = ddp.group_info(group) if gather else None
    if info is not None and info[1] > 1:
        if ddp.should_check_rows(group, sign.device):
            ddp.check_equal_rows(OP, "sign", sign.shape[0], group, sign.device)
        sign_all = ddp.all_gather_with_grad(sign, group)
        text_all = ddp.all_gather_with_grad(text, group)
        offset = ddp.label_offset(sign.shape[0], group)
    impl = _DISPATCH.select(backend, sign=sign, auto=backend == "auto")
    return impl.run(sign.contiguous(), text.contiguous(), sign_all, text_all, scale, s, offset)
