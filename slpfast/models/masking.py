"""Masking strategies for masked pose modeling (MPM).

:func:`sample_joint_mask` returns a (B, T, J) bool mask, True where a joint is hidden from the
encoder and must be reconstructed. Only frames inside each clip's length are ever masked.

Strategies (``ratio`` is the fraction of valid frames / joints / part-frames to hide):

- ``frames``: exactly ``hidden_frames(length)`` whole frames per clip (all joints of a frame):
  ``floor(ratio * length + 1/2)``, but at most ``length - 1``, so a clip keeps a frame to
  reconstruct from.
- ``joints``: each (frame, joint) independently with probability ``ratio``.
- ``parts``: each (frame, part) independently with probability ``ratio``: whole hands, the face,
  the mouth or the body disappear, which forces the model to infer one part from the others.
- ``spans``: non-overlapping contiguous runs at random places, ``hidden_frames(length)`` frames
  in all: runs of ``span`` frames, the last one shorter (one shorter run on a clip where that
  count is below ``span``).
- ``mixed``: one of the four above, drawn per clip.

All randomness comes from the ``generator`` passed in, so a caller that seeds it from
(seed, step, rank) gets masks that do not depend on history (needed for exact resume).
"""
from __future__ import annotations

import math

import torch

from slpfast.layouts import NUM_JOINTS, PART_NAMES, part_ids

STRATEGIES = ("frames", "joints", "parts", "spans", "mixed")
_BASE = STRATEGIES[:4]


def _valid(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B,T)


def _hidden_frames(lengths: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B,) frames to hide per clip: ratio * length rounded half up, at most length - 1 (a clip
    hidden whole leaves MPM nothing to reconstruct from, and its contrastive embedding only mask
    tokens)."""
    want = torch.floor(lengths.to(torch.float64) * ratio + 0.5).to(torch.int64)
    return torch.minimum(want, (lengths - 1).clamp(min=0))


def _frames(lengths, T, ratio, g):
    B = lengths.numel()
    valid = _valid(lengths, T)
    score = torch.rand(B, T, generator=g, device=lengths.device).masked_fill(~valid, 2.0)
    rank = score.argsort(1).argsort(1)  # rank of each frame among its clip's frames
    count = _hidden_frames(lengths, ratio)
    return (rank < count.unsqueeze(1)).unsqueeze(-1).expand(B, T, NUM_JOINTS)


def _joints(lengths, T, ratio, g):
    B = lengths.numel()
    m = torch.rand(B, T, NUM_JOINTS, generator=g, device=lengths.device) < ratio
    return m & _valid(lengths, T).unsqueeze(-1)


_PART_IDS: dict[torch.device, torch.Tensor] = {}


def _part_ids(device: torch.device) -> torch.Tensor:
    """(J,) part index of every joint on ``device``, copied there once (a copy from the host
    per call would synchronize the GPU's stream every step)."""
    if device not in _PART_IDS:
        _PART_IDS[device] = torch.as_tensor(part_ids(), device=device)
    return _PART_IDS[device]


def _parts(lengths, T, ratio, g):
    B = lengths.numel()
    pid = _part_ids(lengths.device)
    hidden = torch.rand(B, T, len(PART_NAMES), generator=g, device=lengths.device) < ratio
    return hidden[:, :, pid] & _valid(lengths, T).unsqueeze(-1)


def _spans(lengths, T, ratio, g, span):
    B = lengths.numel()
    dev = lengths.device
    target = _hidden_frames(lengths, ratio)                                  # (B,) frames to hide
    span_len = torch.minimum(target, torch.full_like(target, span)).clamp(min=1)
    k = max(math.ceil((T * ratio + 0.5) / span), 1)  # a bound on the runs per clip from T >= lengths: no read
    # run j of a clip: span_len frames, the last one what is left of the target (0: unused)
    run = (target.unsqueeze(1) - torch.arange(k, device=dev).unsqueeze(0) * span_len.unsqueeze(1))
    run = torch.minimum(run, span_len.unsqueeze(1)).clamp(min=0)             # (B,k)
    # Non-overlapping runs in order: the clip's free frames (length - target) are cut at k sorted
    # uniform points, and run j starts at its cut plus the frames of the runs before it.
    free = (lengths - target).unsqueeze(1).to(torch.float64)                 # (B,1)
    cuts = (torch.rand(B, k, generator=g, device=dev, dtype=torch.float64) * (free + 1)).floor()
    cuts = torch.minimum(cuts, free).to(torch.int64).sort(1).values
    starts = cuts + run.cumsum(1) - run
    t = torch.arange(T, device=dev).view(1, 1, T)
    inside = (t >= starts.unsqueeze(-1)) & (t < (starts + run).unsqueeze(-1))
    frames = inside.any(1) & _valid(lengths, T)
    return frames.unsqueeze(-1).expand(B, T, NUM_JOINTS)


def sample_joint_mask(lengths: torch.Tensor, T: int, *, strategy: str = "mixed", ratio: float = 0.5,
                      span: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw an MPM mask.

    Args:
        lengths: (B,) int — valid frames per clip (the mask is on ``lengths.device``). On the
            CPU they are checked to lie in [0, T]; on other devices they are clamped to it (no
            device->host read).
        T: padded length (>= max(lengths)).
        strategy: one of :data:`STRATEGIES`.
        ratio: fraction to hide, in [0, 1].
        span: frames per span for the ``spans`` strategy.
        generator: torch.Generator on ``lengths.device`` (None: the global RNG).

    Returns:
        (B, T, J) bool, True = hidden. False everywhere past each length.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"sample_joint_mask: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sample_joint_mask: ratio must be in [0, 1], got {ratio}")
    if span < 1:
        raise ValueError(f"sample_joint_mask: span must be >= 1, got {span}")
    if lengths.dim() != 1 or lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"sample_joint_mask: lengths must be int32/int64 of shape (B,), got {lengths.dtype} {tuple(lengths.shape)}")
    lengths = lengths.to(torch.int64)
    if lengths.device.type == "cpu":
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(f"sample_joint_mask: lengths must be in [0, T={T}], got {lengths.tolist()}")
    else:  # reading device lengths back to check them would stall the GPU's queue every step
        lengths = lengths.clamp(0, T)
    run = {"frames": _frames, "joints": _joints, "parts": _parts,
           "spans": lambda l, t, r, g: _spans(l, t, r, g, span)}
    if strategy != "mixed":
        return run[strategy](lengths, T, ratio, generator).contiguous()
    # mixed: one strategy per clip. Every strategy is drawn for every clip and each clip keeps
    # the one it drew: selecting the clips first (nonzero) would read the choices back to the
    # host; the extra (B, T, J) draws cost far less than that stall on a GPU.
    choice = torch.randint(len(_BASE), (lengths.numel(),), generator=generator, device=lengths.device)
    out = torch.zeros(lengths.numel(), T, NUM_JOINTS, dtype=torch.bool, device=lengths.device)
    for i, name in enumerate(_BASE):
        out = torch.where((choice == i).view(-1, 1, 1), run[name](lengths, T, ratio, generator), out)
    return out


def expected_fraction(strategy: str, ratio: float, length: int) -> float:
    """Expected hidden fraction of the joints of a clip of ``length`` frames.

    ``frames`` and ``spans`` hide exactly ``hidden_frames(length)`` frames (the span length
    changes where, not how many), ``joints`` and ``parts`` hide each item with probability ``ratio``, and
    ``mixed`` is the mean of the four. 0 for an empty clip.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"expected_fraction: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if length <= 0:
        return 0.0
    frames = int(_hidden_frames(torch.tensor([length]), ratio)) / length
    per = {"frames": frames, "spans": frames, "joints": ratio, "parts": ratio}
    return sum(per.values()) / len(per) if strategy == "mixed" else per[strategy]
