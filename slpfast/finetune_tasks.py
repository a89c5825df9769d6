"""The four downstream tasks as modules: pose encoder + task head + loss + prediction.

Every task model follows one protocol so that the pre-training :class:`~slpfast.train.trainer.Trainer`
loop runs it unchanged:

- ``forward(pose, conf, lengths, **targets) -> {"loss": total, <term>: value}`` (scalars);
- ``loss_keys()``: the keys of that dict, in log order;
- ``predict(pose, conf, lengths, batch) -> list of per-clip records`` (plain Python / CPU
  tensors), gathered over ranks and turned into metrics by :func:`compute_metrics`.

Batches are the loader's dicts (``pose (B,T,J,C)``, ``conf (B,T,J)``, ``lengths (B,)``,
``clip_id``, ``text``, ``label``, ``gloss_ids (B,G)`` padded with -1, ``gloss_lengths``,
optional ``text_features (B,D_text)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slpfast.eval.bleu import corpus_bleu
from slpfast.eval.ctc_decode import ctc_beam_decode, ctc_greedy_decode
from slpfast.eval.retrieval import positives_from_texts, retrieval_metrics
from slpfast.eval.rouge import rouge_l
from slpfast.eval.topk import topk_accuracy
from slpfast.eval.wer import word_error_rate
from slpfast.models.encoder import PoseEncoder
from slpfast.data.collate import WordTokenizer, pad_int
from slpfast.models.heads import CTCHead, HFSeq2SeqTranslator, ISLRHead, RetrievalHead, SLTDecoder

TASKS = ("islr", "cslr", "retrieval", "slt")
#: the split prefix each task trains and evaluates on (synthetic corpus naming)
SPLIT_PREFIX = {"islr": "islr", "cslr": "sentence", "retrieval": "sentence", "slt": "sentence"}
#: each task's main metric and whether higher is better: quoted first in the summary lines and
#: named in the results (``main_metric``). Results are those of the last checkpoint (none is
#: picked by this metric).
MAIN_METRIC = {"islr": ("top1", True), "cslr": ("wer_beam", False), "retrieval": ("s2t_R@1", True),
               "slt": ("bleu4", True)}


class TaskModel(nn.Module):
    """Base: owns ``encoder`` (exported by the trainer) and ``head``."""

    task = ""

    def __init__(self, encoder: PoseEncoder):
        super().__init__()
        self.encoder = encoder
        # the MPM mask tokens only enter when joints are hidden, which fine-tuning never does:
        # freeze them so DDP does not wait for gradients that never come
        mask_token = getattr(encoder.parts, "mask_token", None)
        if isinstance(mask_token, nn.Parameter):
            mask_token.requires_grad_(False)

    #: set by --task.freeze_encoder (linear probe): the encoder then stays in eval mode
    frozen_encoder = False

    def train(self, mode: bool = True):
        """A frozen encoder stays in eval mode (no dropout): the probe trains on the features it
        is evaluated on."""
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()
        return self

    def encode(self, pose, conf, lengths):
        return self.encoder(pose[..., : self.encoder.config.coord_dims], conf, lengths)

    def loss_keys(self) -> list[str]:
        return ["loss", self.term]


class ISLRModel(TaskModel):
    task, term = "islr", "ce"

    def __init__(self, encoder: PoseEncoder, num_classes: int, dropout: float = 0.1,
                 label_smoothing: float = 0.1):
        super().__init__(encoder)
        self.num_classes = num_classes
        self.head = ISLRHead(encoder.dim, num_classes, dropout)
        self.label_smoothing = label_smoothing

    def forward(self, pose, conf, lengths, label, **_):
        logits = self.head(self.encode(pose, conf, lengths).pooled).float()
        ce = F.cross_entropy(logits, label.to(logits.device), label_smoothing=self.label_smoothing)
        return {"loss": ce, "ce": ce.detach()}

    @torch.no_grad()
    def predict(self, pose, conf, lengths, batch, **_) -> list:
        logits = self.head(self.encode(pose, conf, lengths).pooled).float().cpu()
        return [(int(c), logits[i], int(batch["label"][i])) for i, c in enumerate(batch["clip_id"])]


class CSLRModel(TaskModel):
    task, term = "cslr", "ctc"

    def __init__(self, encoder: PoseEncoder, num_glosses: int, dropout: float = 0.1, beam_size: int = 8):
        super().__init__(encoder)
        self.num_glosses = num_glosses
        self.head = CTCHead(encoder.dim, num_glosses, dropout)
        self.beam_size = beam_size

    def forward(self, pose, conf, lengths, gloss_ids, gloss_lengths, **_):
        lp = self.head(self.encode(pose, conf, lengths).frames, lengths)
        ctc = self.head.loss(lp, lengths, gloss_ids.to(lp.device), gloss_lengths.to(lp.device))
        return {"loss": ctc, "ctc": ctc.detach()}

    @torch.no_grad()
    def predict(self, pose, conf, lengths, batch, **_) -> list:
        lp = self.head(self.encode(pose, conf, lengths).frames, lengths).cpu()
        lens = lengths.cpu()
        greedy = ctc_greedy_decode(lp, lens, blank=CTCHead.blank)
        beam = ctc_beam_decode(lp, lens, beam_size=self.beam_size, blank=CTCHead.blank)
        out = []
        for i, c in enumerate(batch["clip_id"]):
            ref = [int(g) for g in batch["gloss_ids"][i][: int(batch["gloss_lengths"][i])]]
            out.append((int(c), ref, [g - 1 for g in greedy[i]], [g - 1 for g in beam[i]]))
        return out


class RetrievalModel(TaskModel):
    """Sign-text retrieval. Text features come from the batch (``text_features``, cached) or from
    ``text_encoder`` (frozen HF model, or the trainable small encoder of pre-training)."""

    task, term = "retrieval", "nce"

    def __init__(self, encoder: PoseEncoder, text_dim: int, embed_dim: int = 128,
                 text_encoder: nn.Module | None = None, init_temperature: float = 0.07,
                 contrastive_backend: str = "auto"):
        super().__init__(encoder)
        self.head = RetrievalHead(encoder.dim, text_dim, embed_dim, init_temperature, contrastive_backend)
        self.text_encoder = text_encoder
        self.text_dim = text_dim

    def text_features(self, batch_texts, text_features=None) -> torch.Tensor:
        """(B, D_text): the cached features of this model's text encoder when the batch has
        them (the loader only adds that encoder's set), else the encoder run on the texts."""
        if text_features is not None:
            if text_features.shape[-1] != self.text_dim:
                raise ValueError(f"retrieval: cached text_features have width {text_features.shape[-1]}, "
                                 f"the text encoder gives {self.text_dim}")
            return text_features.to(self.head.text_proj.weight.device)
        if self.text_encoder is None:
            raise ValueError("retrieval: the batch has no text_features and the model has no text encoder")
        return self.text_encoder(list(batch_texts)).pooled

    def forward(self, pose, conf, lengths, texts, text_features=None, **_):
        sign = self.head.embed_sign(self.encode(pose, conf, lengths).pooled)
        text = self.head.embed_text(self.text_features(texts, text_features))
        nce = self.head.loss(sign, text)
        return {"loss": nce, "nce": nce.detach()}

    @torch.no_grad()
    def predict(self, pose, conf, lengths, batch, **_) -> list:
        sign = self.head.embed_sign(self.encode(pose, conf, lengths).pooled).cpu()
        text = self.head.embed_text(self.text_features(batch["text"], batch.get("text_features"))).cpu()
        return [(int(c), sign[i], text[i], batch["text"][i]) for i, c in enumerate(batch["clip_id"])]


class SLTModel(TaskModel):
    """Gloss-free translation with :class:`SLTDecoder` over a word vocabulary (a
    :class:`WordTokenizer` built from the training texts), or with a local Hugging Face
    encoder-decoder (``hf_path``)."""

    task, term = "slt", "ce"

    def __init__(self, encoder: PoseEncoder, vocab: WordTokenizer | None = None, hf_path: str = "",
                 width: int = 256, layers: int = 2, heads: int = 4, dropout: float = 0.1, max_len: int = 32,
                 label_smoothing: float = 0.1, num_beams: int = 1):
        super().__init__(encoder)
        if hf_path:
            self.head = HFSeq2SeqTranslator(hf_path, encoder.dim, max_len)
            self.vocab = None
        else:
            if vocab is None:
                raise ValueError("slt: a WordTokenizer vocabulary is required without an HF model path")
            self.head = SLTDecoder(encoder.dim, len(vocab), width, layers, heads, dropout, max_len)
            self.vocab = vocab
        self.max_len, self.label_smoothing, self.num_beams = max_len, label_smoothing, num_beams

    def forward(self, pose, conf, lengths, texts, **_):
        out = self.encode(pose, conf, lengths)
        if self.vocab is None:
            ce = self.head.loss(out.frames, lengths, list(texts))
        else:
            # a sentence longer than max_len keeps its end token (cut before it, the decoder
            # would never learn to stop on long sentences)
            eos = self.vocab.eos_token_id
            seqs = [s if len(s) <= self.max_len else s[:self.max_len - 1] + [eos] for s in self.vocab(list(texts))]
            ids = torch.from_numpy(pad_int(seqs, self.vocab.pad_token_id, self.max_len)[0])
            ce = self.head.loss(out.frames, lengths, ids.to(out.frames.device), self.label_smoothing)
        return {"loss": ce, "ce": ce.detach()}

    @torch.no_grad()
    def predict(self, pose, conf, lengths, batch, **_) -> list:
        out = self.encode(pose, conf, lengths)
        if self.vocab is None:
            hyps = self.head.translate(out.frames, lengths, self.num_beams)
            refs = list(batch["text"])
        else:
            hyps = [self.vocab.decode(row) for row in self.head.generate(out.frames, lengths, self.max_len).cpu()]
            # the word vocabulary writes lower-case text: the references are scored in that form
            # too (case-insensitive BLEU / ROUGE-L), or a perfect decoder would lose every
            # capitalised word
            refs = [self.vocab.normalize(t) for t in batch["text"]]
        return [(int(c), hyps[i], refs[i]) for i, c in enumerate(batch["clip_id"])]


def dedupe(records: list) -> list:
    """Keep one record per clip id (distributed samplers pad the last batch with repeats),
    sorted by clip id so that metrics do not depend on the number of ranks."""
    seen = {}
    for r in records:
        seen.setdefault(r[0], r)
    return [seen[k] for k in sorted(seen)]


def compute_metrics(task: str, records: list) -> dict:
    """Per-clip records of :meth:`predict` (all ranks, deduplicated) -> the task's metrics."""
    records = dedupe(records)
    if not records:
        raise ValueError(f"{task}: no clips to evaluate")
    if task == "islr":
        logits = torch.stack([r[1] for r in records])
        labels = torch.tensor([r[2] for r in records], dtype=torch.int64)
        return topk_accuracy(logits, labels, ks=(1, 5))
    if task == "cslr":
        refs = [r[1] for r in records]
        g = word_error_rate(refs, [r[2] for r in records])
        b = word_error_rate(refs, [r[3] for r in records])
        out = {f"{k}_greedy": v for k, v in g.items() if k in ("wer", "sub", "del", "ins")}
        out.update({f"{k}_beam": v for k, v in b.items() if k in ("wer", "sub", "del", "ins")})
        out.update(ref_words=g["ref_words"], n=g["n"])
        return out
    if task == "retrieval":
        sign = torch.stack([r[1] for r in records])
        texts = [r[3] for r in records]
        # the text side holds each distinct sentence once (its first clip's embedding: the same
        # text gives the same features). With one column per clip, a wrong sentence shared by
        # five clips was five wrong answers and pushed the right one five places down (R@5,
        # R@10, MedR); any clip of a sentence answers it (positives).
        first: dict[str, int] = {}
        for j, s in enumerate(texts):
            first.setdefault(s, j)
        text = torch.stack([records[j][2] for j in first.values()])
        return retrieval_metrics(sign @ text.t(), positives_from_texts(texts, list(first)))
    if task == "slt":
        hyps, refs = [r[1] for r in records], [r[2] for r in records]
        out = corpus_bleu(hyps, refs)
        out.update(rouge_l(hyps, refs))
        out["examples"] = [{"hyp": h, "ref": r} for h, r in list(zip(hyps, refs))[:5]]
        return out
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
