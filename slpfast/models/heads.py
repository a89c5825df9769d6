"""Task heads on top of :class:`slpfast.models.encoder.PoseEncoder`.

The encoder gives per-frame features ``frames (B, T, D)`` (0 past each clip's length) and a
pooled clip vector ``pooled (B, D)``. Each downstream task adds one head:

- :class:`ISLRHead`: isolated sign recognition, ``pooled -> logits (B, num_classes)``.
- :class:`CTCHead`: continuous recognition, ``frames -> log-probabilities (B, T, V)`` with
  blank = 0 and gloss g at index g + 1 (see :meth:`CTCHead.targets`).
- :class:`RetrievalHead`: sign-text retrieval, projects the pooled clip and a (frozen) text
  encoder's sentence vector into one L2-normalised space with a learnable temperature.
- :class:`SLTDecoder`: gloss-free translation, a small transformer decoder over a word
  vocabulary (:class:`slpfast.data.collate.WordTokenizer` ids: pad 0, bos 1, eos 2, unk 3)
  that cross-attends to the frames.
- :class:`HFSeq2SeqTranslator`: translation with a local Hugging Face encoder-decoder
  (BART / mBART / T5 directory): frames are projected to its width and fed as the
  encoder's ``inputs_embeds``.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


def _key_padding_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T) bool, True = padding. A clip of length 0 keeps frame 0 (a zero vector) visible
    so that cross-attention never softmaxes over an empty set (which would give NaN)."""
    ar = torch.arange(t, device=lengths.device)
    return ar[None, :] >= lengths.clamp(min=1)[:, None]


class ISLRHead(nn.Module):
    """pooled (B, D) -> class logits (B, num_classes)."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ISLRHead: num_classes must be >= 2, got {num_classes}")
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.norm(pooled)))


class CTCHead(nn.Module):
    """frames (B, T, D) -> CTC log-probabilities (B, T, num_glosses + 1), blank = 0.

    A depth-wise temporal convolution (kernel 5) in front of the classifier lets each frame see
    its neighbours: signs span several frames and the encoder was pre-trained without CTC.
    """

    blank = 0

    def __init__(self, dim: int, num_glosses: int, dropout: float = 0.1, kernel: int = 5):
        super().__init__()
        if num_glosses < 1:
            raise ValueError(f"CTCHead: num_glosses must be >= 1, got {num_glosses}")
        self.num_glosses = num_glosses
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_glosses + 1)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = (torch.arange(frames.shape[1], device=frames.device)[None, :]
                < lengths.to(frames.device)[:, None]).unsqueeze(-1).to(frames.dtype)
        x = frames + self.conv((frames * keep).transpose(1, 2)).transpose(1, 2)
        return torch.log_softmax(self.fc(self.drop(self.norm(x))).float(), dim=-1)

    @staticmethod
    def targets(gloss_ids: torch.Tensor, gloss_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch glosses (B, G) padded with -1 -> CTC targets (B, G) (gloss + 1, 0 padded)."""
        return (gloss_ids + 1).clamp(min=0), gloss_lengths

    def loss(self, log_probs: torch.Tensor, lengths: torch.Tensor, gloss_ids: torch.Tensor,
             gloss_lengths: torch.Tensor) -> torch.Tensor:
        """Mean CTC loss per target token; impossible alignments (target longer than the clip)
        contribute 0 instead of inf (``zero_infinity``)."""
        tgt, tgt_len = self.targets(gloss_ids, gloss_lengths)
        return F.ctc_loss(log_probs.transpose(0, 1), tgt, lengths, tgt_len, blank=self.blank,
                          reduction="mean", zero_infinity=True)


class RetrievalHead(nn.Module):
    """Joint sign-text space: ``sign (B, D) -> (B, E)``, ``text (B, D_text) -> (B, E)``, both
    L2-normalised, and the symmetric InfoNCE loss with a learnable temperature.

    The parameter names (``sign_proj``, ``text_proj``, ``contrastive.log_scale``) are those of
    :class:`slpfast.models.pretrain_model.PretrainModel`, so the pre-trained contrastive head
    loads as is (zero-shot retrieval) and fine-tuning starts from it.
    """

    def __init__(self, dim: int, text_dim: int, embed_dim: int = 128, init_temperature: float = 0.07,
                 backend: str = "auto"):
        super().__init__()
        from slpfast.nn import ContrastiveLoss

        self.sign_proj = nn.Linear(dim, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.contrastive = ContrastiveLoss(init_temperature, backend=backend)

    def embed_sign(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.sign_proj(pooled).float(), dim=-1)

    def embed_text(self, text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_features.to(self.text_proj.weight.dtype)).float(), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        """The multiplier (1 / temperature, capped at 100 as in CLIP)."""
        return self.contrastive.scale

    def loss(self, sign: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of normalised (B, E) embeddings (all-gathered under DDP)."""
        return self.contrastive(sign, text)


#: special token ids shared with :class:`slpfast.data.collate.WordTokenizer`
PAD, BOS, EOS = 0, 1, 2


class SLTDecoder(nn.Module):
    """Small pre-LN transformer decoder: words attend causally to each other and to the frames.

    ``forward(frames (B,T,D), lengths (B,), ids (B,L)) -> logits (B, L, V)`` (teacher forcing);
    :meth:`loss` shifts the targets; :meth:`generate` decodes greedily.
    """

    def __init__(self, dim: int, vocab_size: int, width: int = 256, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1, max_len: int = 64):
        super().__init__()
        if width % heads:
            raise ValueError(f"SLTDecoder: width={width} must be divisible by heads={heads}")
        self.max_len = max_len
        self.mem_proj = nn.Linear(dim, width)
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.pos = nn.Embedding(max_len, width)
        layer = nn.TransformerDecoderLayer(width, heads, 4 * width, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab_size)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        L = ids.shape[1]
        if L > self.max_len:
            raise ValueError(f"SLTDecoder: {L} tokens exceed max_len={self.max_len}")
        x = self.embed(ids) + self.pos(torch.arange(L, device=ids.device))
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=ids.device), 1)
        mem = self.mem_proj(frames)
        h = self.decoder(x, mem, tgt_mask=causal, tgt_key_padding_mask=ids == PAD,
                         memory_key_padding_mask=_key_padding_mask(lengths.to(ids.device), frames.shape[1]),
                         tgt_is_causal=True)
        return self.out(self.norm(h))

    def loss(self, frames, lengths, ids, label_smoothing: float = 0.1) -> torch.Tensor:
        """Teacher-forced cross-entropy of ids[:, 1:] given ids[:, :-1]; padding ignored."""
        logits = self(frames, lengths, ids[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(),
                               ignore_index=PAD, label_smoothing=label_smoothing)

    @torch.no_grad()
    def generate(self, frames: torch.Tensor, lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """Greedy decoding -> ids (B, <=max_len) starting with <bos>; rows stop at <eos>."""
        max_len = min(max_len or self.max_len, self.max_len)
        ids = torch.full((frames.shape[0], 1), BOS, dtype=torch.int64, device=frames.device)
        done = torch.zeros(frames.shape[0], dtype=torch.bool, device=frames.device)
        for _ in range(max_len - 1):
            nxt = self(frames, lengths, ids)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return ids


class HFSeq2SeqTranslator(nn.Module):
    """A local Hugging Face encoder-decoder as the translation model.

    The pose frames (B, T, D) are projected to the model's width and passed as the encoder's
    ``inputs_embeds``; the tokenizer of the same directory encodes targets and decodes outputs.
    Loaded with ``local_files_only`` (never downloads).
    """

    def __init__(self, path: str, dim: int, max_len: int = 64):
        super().__init__()
        if not os.path.isdir(path):
            raise ValueError(f"HFSeq2SeqTranslator: slt_model={path!r} is not a local directory "
                             "with a Hugging Face encoder-decoder (config.json + weights + tokenizer)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError/... for a bad dir
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ValueError(f"HFSeq2SeqTranslator: slt_model={path!r} cannot be loaded as a Hugging Face "
                             f"encoder-decoder and tokenizer ({type(e).__name__}: {msg})") from None
        if not getattr(self.model.config, "is_encoder_decoder", False):
            raise ValueError(f"HFSeq2SeqTranslator: {path} is not an encoder-decoder model")
        width = int(getattr(self.model.config, "d_model", 0) or self.model.config.hidden_size)
        self.proj = nn.Linear(dim, width)
        self.max_len = max_len
        self.path = path

    def _encoder_inputs(self, frames, lengths):
        frames, lengths = self._fit_positions(frames, lengths.to(frames.device))
        mask = ~_key_padding_mask(lengths, frames.shape[1])
        return self.proj(frames), mask.long()

    def _fit_positions(self, frames, lengths):
        """Clips longer than the model's learned positions (``max_position_embeddings``, e.g.
        1024 for mBART; T5 has none) are average-pooled in time by the smallest integer stride
        that fits, instead of failing on an out-of-range position."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        t = frames.shape[1]
        if not limit or t <= limit:
            return frames, lengths
        stride = -(-t // limit)
        pad = (-t) % stride
        x = F.pad(frames, (0, 0, 0, pad))                                 # frames are 0 past lengths
        x = x.view(x.shape[0], -1, stride, x.shape[2]).sum(2)
        new_len = -(-lengths // stride)
        # divide by the number of valid frames in each window (the last one may be partial)
        starts = torch.arange(x.shape[1], device=x.device)[None, :] * stride
        count = (lengths[:, None] - starts).clamp(0, stride).clamp(min=1)
        return x / count[..., None].to(x.dtype), new_len

    def loss(self, frames, lengths, texts: list[str]) -> torch.Tensor:
        emb, mask = self._encoder_inputs(frames, lengths)
        labels = self.tokenizer(text_target=list(texts), padding=True, truncation=True,
                                max_length=self.max_len, return_tensors="pt")["input_ids"].to(frames.device)
        labels = labels.masked_fill(labels == self.tokenizer.pad_token_id, -100)
        return self.model(inputs_embeds=emb, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def translate(self, frames, lengths, num_beams: int = 1) -> list[str]:
        emb, mask = self._encoder_inputs(frames, lengths)
        out = self.model.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=self.max_len,
                                  num_beams=num_beams)
        return [s.strip() for s in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
