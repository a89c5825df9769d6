"""AdamW with decoupled weight decay on matrices only, and a warmup + cosine schedule.

Biases, norm weights, embeddings, mask tokens and the contrastive temperature are not decayed:
decaying them pulls them toward 0 for no regularisation benefit (and decaying a temperature
would fight the loss).
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: parameter-name fragments that are never weight-decayed
_NO_DECAY = ("bias", "norm", "pos.weight", "part_type", "mask_token", "logit_scale", "embed")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed (matrices of Linear layers) and not decayed (everything else)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() < 2 or any(k in name for k in _NO_DECAY):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW from an :class:`slpfast.train.config.OptimConfig`, fused (one kernel per step on a
    GPU; CPU too): the fused implementation also skips a step on the device when given a
    ``found_inf`` flag, which the trainer uses to skip non-finite steps without a host sync."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.eps, fused=True)


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier at ``step`` (0-based): linear from 1/(warmup+1) to 1 over ``warmup`` steps,
    then cosine from 1 to ``min_ratio`` at ``total``; ``min_ratio`` afterwards."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR of :func:`warmup_cosine`; step it once per optimizer step. Its state_dict is checkpointed."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup=cfg.warmup_steps, total=total_steps, min_ratio=cfg.min_lr_ratio))
