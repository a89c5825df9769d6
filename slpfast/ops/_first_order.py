"""Backward passes that are first-order only, with a loud double backward.

The fused backends (contrastive ``triton`` / ``chunked``, attention ``triton``) compute their
gradients with kernels or recomputation that autograd cannot differentiate. torch's
``@once_differentiable`` is not enough: it hands back gradients detached from the inputs, so a
double backward (gradient penalties, Hessian-vector products) either fails with an unrelated
message ("element 0 of tensors does not require grad") or, when the gradient is only part of a
larger expression, silently gets None / zero for the second-order term.

:func:`first_order_only` instead ties the computed gradients to the tensors they depend on
through a node whose backward raises a ``RuntimeError`` naming the op and the backend. A plain
backward never reaches that node; only differentiating the gradients does.
"""
from __future__ import annotations

import torch


class _RaiseOnBackward(torch.autograd.Function):
    """Forward: the gradients (computed without a graph) unchanged. Backward: raises."""

    @staticmethod
    def forward(ctx, message: str, grads: tuple, *depends_on):
        ctx.message = message
        # clones: returning a tensor created outside forward would alias it with a graph
        return tuple(g.clone() for g in grads)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(ctx.message)


def first_order_only(op: str, backend: str, grads: tuple, depends_on: tuple) -> tuple:
    """Gradients of a custom backward, made to raise if anything differentiates them again.

    Args:
        op, backend: named in the error, e.g. ``"contrastive_loss"``, ``"chunked"``.
        grads: the backward's return values (tensors or None), computed under ``no_grad``.
        depends_on: the tensors the gradients are a function of (the forward's inputs and the
            incoming gradient); None entries are ignored.
    Returns:
        ``grads`` unchanged unless a graph is being built (``create_graph=True``) and one of
        ``depends_on`` requires grad; then the tensors among them come back attached to a node
        whose backward raises ``RuntimeError("<op>: double backward is not supported by backend
        '<backend>'; use backend='eager'")``.
    """
    deps = [t for t in depends_on if isinstance(t, torch.Tensor) and t.requires_grad]
    if not torch.is_grad_enabled() or not deps:
        return grads
    idx = [i for i, g in enumerate(grads) if isinstance(g, torch.Tensor)]
    if not idx:
        return grads
    message = (f"{op}: double backward (differentiating its gradients) is not supported by backend "
               f"'{backend}'; use backend='eager'")
    wrapped = _RaiseOnBackward.apply(message, tuple(grads[i] for i in idx), *deps)
    out = list(grads)
    for i, g in zip(idx, wrapped):
        out[i] = g
    return tuple(out)
