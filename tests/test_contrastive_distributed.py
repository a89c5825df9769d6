"""contrastive_loss under a 2-process gloo group equals the single-process loss on the
concatenated batch: the mean of the per-rank losses is the global loss, each rank's input
gradients are world_size x the global gradients of its rows (so DDP's averaging yields the
global gradients of the parameters), and the mean of the scale gradients is the global one."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from conftest import run_distributed

N_LOCAL, D, SCALE = 6, 24, 12.5


def _global_batch(n_total, d):
    g = torch.Generator().manual_seed(1234)  # same batch on every rank
    x = F.normalize(torch.randn(n_total, d, generator=g, dtype=torch.float64), dim=1)
    y = F.normalize(x + 0.7 * torch.randn(n_total, d, generator=g, dtype=torch.float64), dim=1)
    return x, y


class _GatherAllReduce(torch.autograd.Function):
    """All-gather whose backward is all-reduce + own slice: a different route to the same
    gradient than slpfast's reduce-scatter (torch.distributed.nn.all_gather, open_clip's own
    route, aborts processes at exit under gloo in torch 2.13, so it is not used here)."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def _open_clip_style(sign, text, scale):
    """Independent formulation of open_clip's ClipLoss(local_loss=True, gather_with_grad=True)."""
    rank = dist.get_rank()
    all_sign = _GatherAllReduce.apply(sign)
    all_text = _GatherAllReduce.apply(text)
    labels = torch.arange(sign.shape[0]) + rank * sign.shape[0]
    return 0.5 * (F.cross_entropy(scale * sign @ all_text.T, labels)
                  + F.cross_entropy(scale * text @ all_sign.T, labels))


def _assert_gather_equals_single_process(rank, world):
    from slpfast.ops import contrastive_loss
    from slpfast.reference.contrastive import contrastive_loss_global

    xg, yg = _global_batch(world * N_LOCAL, D)
    x64, y64 = xg.clone().requires_grad_(), yg.clone().requires_grad_()
    s64 = torch.tensor(SCALE, dtype=torch.float64, requires_grad=True)
    ref = contrastive_loss_global(x64, y64, s64)
    ref_dx, ref_dy, ref_ds = torch.autograd.grad(ref, (x64, y64, s64))
    rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)

    backends = ["eager", "chunked"]
    if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available():
        backends.append("triton")
    for backend, dtype in [(b, torch.float32) for b in backends] + [("chunked", torch.float64), ("oc", torch.float64)]:
        x = xg[rows].to(dtype).requires_grad_()
        y = yg[rows].to(dtype).requires_grad_()
        s = torch.tensor(SCALE, dtype=dtype, requires_grad=True)
        if backend == "oc":
            loss = _open_clip_style(x, y, s)
        else:
            loss = contrastive_loss(x, y, s, backend=backend)
        dx, dy, ds = torch.autograd.grad(loss, (x, y, s))
        mean_loss = loss.detach().double().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        mean_ds = ds.double().clone()
        dist.all_reduce(mean_ds)
        mean_ds /= world
        tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
        where = f"rank {rank} {backend} {dtype}"
        torch.testing.assert_close(mean_loss, ref.detach(), **tol, msg=lambda m: f"{where} loss: {m}")
        torch.testing.assert_close(dx.double(), world * ref_dx[rows], **tol, msg=lambda m: f"{where} d_sign: {m}")
        torch.testing.assert_close(dy.double(), world * ref_dy[rows], **tol, msg=lambda m: f"{where} d_text: {m}")
        torch.testing.assert_close(mean_ds, ref_ds, **tol, msg=lambda m: f"{where} d_scale: {m}")
        # each rank's own loss is the local loss, not the global one (guards against a test
        # that would pass with gather silently off)
        assert not torch.allclose(loss.detach().double(), ref.detach(), rtol=1e-6), where

    # frozen text features: only the sign-side and scale gradients are computed, still exact
    x = xg[rows].float().requires_grad_()
    s = torch.tensor(SCALE, requires_grad=True)
    dx, ds = torch.autograd.grad(contrastive_loss(x, yg[rows].float(), s, backend="chunked"), (x, s))
    dist.all_reduce(ds)
    torch.testing.assert_close(dx.double(), world * ref_dx[rows], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ds.double() / world, ref_ds, rtol=1e-4, atol=1e-6)

    # gather=False: the plain loss of the local rows only
    x, y = xg[rows].float(), yg[rows].float()
    torch.testing.assert_close(contrastive_loss(x, y, SCALE, gather=False),
                               contrastive_loss_global(x, y, SCALE))

    # unequal N_local: a ValueError naming the argument on every rank, no hang, no abort
    n_bad = N_LOCAL + rank
    try:
        contrastive_loss(xg[:n_bad].float(), yg[:n_bad].float(), SCALE, backend="chunked")
    except ValueError as exc:
        assert "N_local per rank = [6, 7]" in str(exc), str(exc)
    else:
        raise AssertionError("unequal N_local was not detected")


def test_two_process_gather_equals_single_process_loss():
    run_distributed(_assert_gather_equals_single_process, 2)


def test_row_check_policy(monkeypatch):
    """CPU tensors: always checked; GPU: first call per group, every call in debug mode."""
    from slpfast.ops import distributed as ddp

    monkeypatch.setattr(ddp, "_checked_groups", set())
    monkeypatch.delenv(ddp.DEBUG_ENV, raising=False)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert ddp.should_check_rows(None, cpu) and ddp.should_check_rows(None, cpu)
    assert ddp.should_check_rows(None, gpu) and not ddp.should_check_rows(None, gpu)
    group = object()
    assert ddp.should_check_rows(group, gpu) and not ddp.should_check_rows(group, gpu)
    monkeypatch.setenv(ddp.DEBUG_ENV, "1")
    assert ddp.should_check_rows(None, gpu) and ddp.should_check_rows(group, gpu)
