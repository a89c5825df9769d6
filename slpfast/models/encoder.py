"""The part-aware pose encoder: manual and non-manual temporal transformers, fused.

::

    pose (B,T,J,C), conf (B,T,J) ──PartEmbedding──> (B,T,5,D) part tokens
        body+left+right ──concat,Linear──> manual frames     ──L_m blocks──┐
        face+mouth      ──concat,Linear──> non-manual frames ──L_n blocks──┴─concat,Linear,LN─> frames (B,T,D)
                                                              masked mean over valid frames ─> pooled (B,D)

Each branch is a pre-LN transformer whose self-attention is :class:`slpfast.nn.MaskedSelfAttention`
(ragged clips without an N x N mask). The encoder runs on padded clips (``lengths``) or packed
clips (``cu_seqlens``): pass ``pose`` as (total, J, C) and ``conf`` as (total, J) for the latter.
Padded frames come out exactly 0 and never influence valid frames.

Weights round-trip through safetensors with the config in the file's metadata:
``encoder.save_pretrained(path)`` / ``PoseEncoder.from_pretrained(path)``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from slpfast.models.part_embed import PART_INDEX, PartEmbedding

#: size presets: dim, manual layers, non-manual layers, heads
SIZES = {
    "tiny": dict(dim=64, manual_layers=2, non_manual_layers=1, heads=2),
    "small": dict(dim=256, manual_layers=4, non_manual_layers=4, heads=4),
    "base": dict(dim=512, manual_layers=6, non_manual_layers=6, heads=8),
}


@dataclass
class PoseEncoderConfig:
    """Shape of a :class:`PoseEncoder`. Fields left at 0 take their value from ``size``."""

    size: str = "tiny"
    """Preset: 'tiny' (tests and CPU: D=64, 2+1 layers, 2 heads), 'small' (D=256, 4+4, 4 heads) or 'base' (D=512, 6+6 layers, 8 heads)."""
    dim: int = 0
    """Model width D (0 = from size)."""
    manual_layers: int = 0
    """Transformer blocks in the manual (body + hands) branch (0 = from size)."""
    non_manual_layers: int = 0
    """Transformer blocks in the non-manual (face + mouth) branch (0 = from size)."""
    heads: int = 0
    """Attention heads per block; dim must be divisible by it (0 = from size)."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's MLP, as a multiple of dim."""
    dropout: float = 0.0
    """Dropout after attention and MLP (0 keeps runs bit-reproducible without saved RNG)."""
    max_frames: int = 1024
    """Longest clip the learned temporal position embedding covers."""
    coord_dims: int = 2
    """Coordinates per joint C: 2 (x, y) or 3 (x, y, z)."""
    attn_backend: str = "auto"
    """Backend of slpfast.ops.masked_attention: auto, triton, flex, sdpa, xformers or eager."""

    def resolved(self) -> "PoseEncoderConfig":
        """Copy with the size preset applied to fields left at 0; validates everything."""
        if self.size not in SIZES:
            raise ValueError(f"model.size must be one of {sorted(SIZES)}, got {self.size!r}")
        # a config read from JSON or built by hand can hold any type: name the field, not the
        # comparison or the nn.Linear that fails on it
        for name in ("dim", "manual_layers", "non_manual_layers", "heads", "max_frames", "coord_dims"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"model.{name} must be an int, got {type(v).__name__} {v!r}")
        for name in ("mlp_ratio", "dropout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"model.{name} must be a finite number, got {type(v).__name__} {v!r}")
        preset = SIZES[self.size]
        cfg = dataclasses.replace(self, **{k: (getattr(self, k) or v) for k, v in preset.items()})
        for name in ("dim", "manual_layers", "non_manual_layers", "heads", "max_frames"):
            if getattr(cfg, name) <= 0:
                raise ValueError(f"model.{name} must be > 0, got {getattr(cfg, name)}")
        if cfg.dim % cfg.heads:
            raise ValueError(f"model.dim={cfg.dim} must be divisible by model.heads={cfg.heads}")
        if cfg.coord_dims not in (2, 3):
            raise ValueError(f"model.coord_dims must be 2 or 3, got {cfg.coord_dims}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
        if int(cfg.dim * cfg.mlp_ratio) < 1:  # a 0-wide MLP would leave each block's MLP a constant bias
            raise ValueError(f"model.mlp_ratio must make the MLP at least 1 wide (dim * mlp_ratio >= 1 with "
                             f"dim={cfg.dim}), got {cfg.mlp_ratio}")
        return cfg


@dataclass
class EncoderOutput:
    """What :meth:`PoseEncoder.forward` returns.

    frames: (B, T, D) padded (0 past each length) or (total, D) packed — fused per-frame features.
    pooled: (B, D) — mean of the valid frames (0 for an empty clip).
    manual / non_manual: the two branches' per-frame outputs, same layout as ``frames``.
    """

    frames: torch.Tensor
    pooled: torch.Tensor
    manual: torch.Tensor
    non_manual: torch.Tensor


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). x is (B,T,D) or (total,D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, attn_backend: str):
        super().__init__()
        from slpfast.nn import MaskedSelfAttention

        self.norm1 = nn.LayerNorm(dim)
        self.attn = MaskedSelfAttention(dim, heads, backend=attn_backend)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, **lens) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), **lens))
        return x + self.drop(self.mlp(self.norm2(x)))


class PoseEncoder(nn.Module):
    """Part-aware pose encoder (see the module docstring for the architecture)."""

    def __init__(self, config: PoseEncoderConfig | None = None):
        super().__init__()
        cfg = (config or PoseEncoderConfig()).resolved()
        self.config = cfg
        d = cfg.dim
        self.dim = d
        self.parts = PartEmbedding(d, cfg.coord_dims)
        self.manual_in = nn.Linear(3 * d, d)
        self.non_manual_in = nn.Linear(2 * d, d)
        self.pos = nn.Embedding(cfg.max_frames, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        block = lambda: Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout, cfg.attn_backend)  # noqa: E731
        self.manual = nn.ModuleList([block() for _ in range(cfg.manual_layers)])
        self.non_manual = nn.ModuleList([block() for _ in range(cfg.non_manual_layers)])
        self.manual_norm = nn.LayerNorm(d)
        self.non_manual_norm = nn.LayerNorm(d)
        self.fuse = nn.Linear(2 * d, d)
        self.out_norm = nn.LayerNorm(d)
        # the manual parts are tokens 0..2 and the non-manual ones 3..4: slices, not index lists
        # (an index list would copy in the forward and scatter-add in the backward)
        assert [PART_INDEX[p] for p in ("body", "left_hand", "right_hand", "face", "mouth")] == [0, 1, 2, 3, 4]
        self._manual_idx = slice(0, 3)
        self._non_manual_idx = slice(3, 5)

    # ------------------------------------------------------------------ forward
    def forward(self, pose: torch.Tensor, conf: torch.Tensor, lengths: torch.Tensor | None = None, *,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                joint_mask: torch.Tensor | None = None) -> EncoderOutput:
        """Encode padded clips (pose (B,T,J,C), conf (B,T,J), lengths (B,)) or packed clips
        (pose (total,J,C), conf (total,J), cu_seqlens (B+1,), optional host int max_seqlen).

        joint_mask: optional bool, shaped like conf, True where MPM hides a joint.

        Nothing is read back from the device (no host sync) for padded clips, or for packed ones
        with ``max_seqlen``: on a GPU the lengths are then not checked, a padded length outside
        ``[0, T]`` acts as clamped to it (on the CPU, masked_attention checks them).
        """
        for name, t in (("pose", pose), ("conf", conf), ("lengths", lengths), ("cu_seqlens", cu_seqlens),
                        ("joint_mask", joint_mask)):
            if t is not None and not isinstance(t, torch.Tensor):
                raise TypeError(f"PoseEncoder: {name} must be a torch.Tensor, got {type(t).__name__}")
        if joint_mask is not None and joint_mask.dtype != torch.bool:
            raise ValueError(f"PoseEncoder: joint_mask must be a bool tensor (True: hidden), got {joint_mask.dtype}")
        packed = cu_seqlens is not None
        if packed == (lengths is not None):
            raise ValueError("PoseEncoder: pass exactly one of lengths (padded) or cu_seqlens (packed)")
        if pose.dim() != (3 if packed else 4):
            raise ValueError(f"PoseEncoder: pose must be {'(total,J,C)' if packed else '(B,T,J,C)'}, got {tuple(pose.shape)}")
        if packed:
            # a caller that passes max_seqlen vouches for cu_seqlens (as masked_attention takes it):
            # on a GPU nothing is then read back to the host
            trusted = torch.compiler.is_compiling() or (max_seqlen is not None and cu_seqlens.device.type != "cpu")
            pos_ids, seg = self._packed_positions(cu_seqlens, pose.shape[0], check=not trusted)
            unchecked = max_seqlen is None and not trusted and pos_ids.numel()
            if unchecked and int(pos_ids.max()) >= self.config.max_frames:
                # as the padded path: frames past max_frames would all share the last position
                # embedding (with max_seqlen the check below covers it, without a read)
                raise ValueError(f"PoseEncoder: a packed clip of {int(pos_ids.max()) + 1} frames exceeds "
                                 f"model.max_frames={self.config.max_frames}")
            keep = None  # every packed frame is valid
            attn_kw = dict(cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        else:
            B, T = pose.shape[:2]
            if lengths.shape != (B,):
                raise ValueError(f"PoseEncoder: lengths must be (B,)=({B},), got {tuple(lengths.shape)}")
            if T > self.config.max_frames:
                raise ValueError(f"PoseEncoder: clips of T={T} frames exceed model.max_frames={self.config.max_frames}")
            pos_ids = torch.arange(T, device=pose.device)
            valid = pos_ids.unsqueeze(0) < lengths.to(pose.device).unsqueeze(1)  # (B,T)
            keep = valid.unsqueeze(-1)
            # max_seqlen=T: masked_attention then clamps the lengths to [0, T] on the device instead
            # of reading them back to check them (a device->host sync in every layer on a GPU)
            attn_kw = dict(seq_lens=lengths, max_seqlen=T)
        if packed and max_seqlen is not None and max_seqlen > self.config.max_frames:
            raise ValueError(f"PoseEncoder: max_seqlen={max_seqlen} exceeds model.max_frames={self.config.max_frames}")

        if keep is not None:  # padding frames are missing joints: whatever they hold (NaN, inf) stays out
            conf = torch.where(keep, conf, torch.zeros((), dtype=conf.dtype, device=conf.device))
        tokens = self.parts(pose, conf, joint_mask)  # (..., 5, D)
        pos = self.pos(pos_ids.clamp(max=self.config.max_frames - 1)).to(tokens.dtype)
        zero = torch.zeros((), dtype=tokens.dtype, device=tokens.device)
        zero_padding = (lambda x: x) if keep is None else (lambda x: torch.where(keep, x, zero))  # noqa: E731
        m = zero_padding(self.manual_in(tokens[..., self._manual_idx, :].flatten(-2)) + pos)
        n = zero_padding(self.non_manual_in(tokens[..., self._non_manual_idx, :].flatten(-2)) + pos)
        for blk in self.manual:
            m = blk(m, **attn_kw)
        for blk in self.non_manual:
            n = blk(n, **attn_kw)
        m = zero_padding(self.manual_norm(m))
        n = zero_padding(self.non_manual_norm(n))
        frames = zero_padding(self.out_norm(self.fuse(torch.cat([m, n], dim=-1))))
        if packed:
            num = cu_seqlens.numel() - 1
            sums = frames.new_zeros(num, self.dim).index_add_(0, seg, frames)
            counts = (cu_seqlens[1:] - cu_seqlens[:-1]).to(frames.dtype)
        else:
            sums = frames.sum(1)
            counts = lengths.to(device=frames.device).clamp(0, frames.shape[1]).to(frames.dtype)
        pooled = sums / counts.clamp(min=1).unsqueeze(-1)  # empty clip -> 0, never NaN
        return EncoderOutput(frames=frames, pooled=pooled, manual=m, non_manual=n)

    @staticmethod
    def _packed_positions(cu_seqlens: torch.Tensor, total: int, check: bool = True):
        """Per packed frame: position within its clip, and clip index: two (total,) int64.

        ``check`` reads cu_seqlens (B+1,) back (one copy) to check that it starts at 0, never
        decreases and ends at ``total``. It must run before ``repeat_interleave``: given
        ``output_size``, that op writes the repeats out before it refuses a negative count, so
        offsets like [0, 4, 3] (lengths 4 and -1) corrupt the heap on the CPU."""
        if check:
            from slpfast.ops._validate import check_cu_seqlens

            check_cu_seqlens("PoseEncoder", "cu_seqlens", cu_seqlens, total)
        cu = cu_seqlens.to(torch.int64)
        if cu.dim() != 1 or cu.numel() < 1:
            raise ValueError(f"PoseEncoder: cu_seqlens must be (B+1,), got {tuple(cu.shape)}")
        counts = cu[1:] - cu[:-1]
        seg = torch.repeat_interleave(torch.arange(counts.numel(), device=cu.device), counts, output_size=total)
        pos = torch.arange(total, device=cu.device) - cu[:-1][seg]
        return pos, seg

    # ---------------------------------------------------------- save / load
    def save_pretrained(self, path: str) -> None:
        """Write the weights as safetensors with the config JSON in the metadata (atomic: temp
        file, fsync, rename; the file gets the usual permissions of the umask, where
        safetensors' ``save_file`` would create it private, 0600)."""
        from safetensors.torch import save

        from slpfast.data.shard_format import atomic_write_bytes

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"format": "pt", "slpfast_encoder_config": json.dumps(dataclasses.asdict(self.config))}
        atomic_write_bytes(path, [save(state, metadata=meta)])

    @classmethod
    def from_pretrained(cls, path: str, map_location: str | torch.device = "cpu") -> "PoseEncoder":
        """Build an encoder from a file written by :meth:`save_pretrained` (or the pre-training export)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not os.path.isfile(path):
            raise ValueError(f"PoseEncoder.from_pretrained: {path!r} is not a file (give the .safetensors written by "
                             "save_pretrained or the pre-training export)")
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(path, device=str(map_location))
        except Exception as e:  # noqa: BLE001 - any parse failure means a damaged or foreign file
            raise ValueError(f"PoseEncoder.from_pretrained: {path} is not a readable safetensors file "
                             f"({type(e).__name__}: {e})") from None
        if "slpfast_encoder_config" not in meta:
            raise ValueError(f"PoseEncoder.from_pretrained: {path} has no slpfast_encoder_config metadata; "
                             "it was not written by PoseEncoder.save_pretrained")
        try:
            cfg = PoseEncoderConfig(**json.loads(meta["slpfast_encoder_config"]))
            enc = cls(cfg)
            enc.load_state_dict(state)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"PoseEncoder.from_pretrained: the config or weights in {path} do not fit a PoseEncoder "
                             f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        return enc
