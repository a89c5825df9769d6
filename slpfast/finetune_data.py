"""The data + model provider of fine-tuning, plugged into the pre-training Trainer.

:class:`FinetuneData` has the interface the :class:`~slpfast.train.trainer.Trainer` expects from
:class:`~slpfast.train.data.PretrainData` (``build_model``, ``loss_keys``, ``next_batch``,
``prepare``, ``loader_state`` / ``load_loader_state``), so checkpoints, resume, SIGTERM,
DDP, logging and the progress bar are the pre-training ones. On top it has
:meth:`FinetuneData.evaluate`: a pass over an evaluation split, sharded over ranks, records
gathered to every rank, metrics from :func:`slpfast.finetune_tasks.compute_metrics`.

Pose preprocessing is the pre-training one: ``normalize_pose``, then (training only, with
``data.augment``) ``augment_pose`` with the pre-training's ``AUGMENT`` settings, seeded by
(seed, step, micro-batch) and keyed by clip id. ISLR and retrieval train on random windows of
``data.max_frames``; CSLR and SLT on whole clips (those longer than ``model.max_frames`` are
left out of training: a window would not show all of its target). Evaluation reads whole clips
up to ``model.max_frames`` (the centre of a longer one).
"""
from __future__ import annotations

import numpy as np
import torch

from slpfast.finetune_init import (build_encoder, check_task, load_contrastive_head, load_strict,
                                   load_task_model, model_config_for, pretrain_text_setup,
                                   read_init)
from slpfast.finetune_tasks import (SPLIT_PREFIX, CSLRModel, ISLRModel, RetrievalModel, SLTModel,
                                    compute_metrics)
from slpfast.train import distributed as D
from slpfast.train.data import AUGMENT, LoaderCycle, _mix, longest_augmentable, open_store


def label_subset(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A class-stratified ``fraction`` of ``indices`` (at least one clip per class), sorted.

    Stratified so that 10% of the labels still covers every class: a plain random 10% of a
    small ISLR set would leave some classes without a single training example.
    """
    if fraction >= 1.0:
        return np.sort(indices)
    rng = np.random.default_rng([seed, 0x1AB])
    keep = []
    # one stable sort instead of a pass over every clip per class (O(N x classes)): each class's
    # members come out in their order in ``indices``, as the per-class mask gave them
    lab = labels[indices]
    order = np.argsort(lab, kind="stable")
    classes, starts = np.unique(lab[order], return_index=True)
    bounds = np.append(starts, len(order))
    for j in range(len(classes)):
        members = indices[order[bounds[j]:bounds[j + 1]]]
        k = max(1, int(round(fraction * len(members))))
        keep.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(keep)) if keep else indices[:0]


#: tasks whose targets describe the whole clip (a gloss sequence, a sentence)
SENTENCE_TASKS = ("cslr", "slt")


class FinetuneData(LoaderCycle):
    """Store, splits, loader, task model and evaluation for one rank."""

    def __init__(self, cfg, dist: D.DistInfo):
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        t = cfg.task
        # a run folder: its latest checkpoint first where only a checkpoint will do (--eval-only needs
        # the trained head, which an exported encoder lacks) or serves better (retrieval: the
        # sign-text projections)
        self.src = read_init(t.init, cfg.model, prefer_checkpoint=t.task == "retrieval" or t.eval_only)
        check_task(self.src, t.task)
        # the model section records the encoder actually used (so a fine-tuning checkpoint rebuilds it)
        cfg.model = self.src.encoder_config = model_config_for(cfg.model, self.src)
        self.store = open_store(cfg, dist)
        prefix = SPLIT_PREFIX[t.task]
        splits = self.store.splits
        self.train_split = t.train_split if t.train_split != "auto" else \
            (f"{prefix}_train" if f"{prefix}_train" in splits else "train")
        self.eval_splits = [s.strip() for s in t.eval_splits.split(",") if s.strip()] if t.eval_splits != "auto" \
            else [s for s in (f"{prefix}_val", f"{prefix}_test", "val", "test") if s in splits][:2]
        if not self.eval_splits:  # training would finish "done" with no metric at all
            looked = f"{prefix}_val, {prefix}_test, val, test"
            raise ValueError(f"task.eval_splits: the store {self.store.path} has none of the evaluation splits "
                             f"{looked} (splits: {splits}); name them with --task.eval_splits=SPLIT[,SPLIT]")
        for s in [self.train_split] + self.eval_splits:
            if s not in splits:
                raise ValueError(f"task: split {s!r} is not in the store {self.store.path} (splits: {splits})")
        self.train_indices = self._usable(self.train_split)
        if t.task in SENTENCE_TASKS:
            self.train_indices = self._whole_clips(self.train_indices)
        if t.task == "islr":
            self.train_indices = label_subset(self.store.labels, self.train_indices, t.label_fraction, t.label_seed)
        self._resolve()
        self.text_encoder, self.feature_name = self._text_side()
        self.loader = None if t.eval_only else self._build_loader()
        self._iter = None

    # ------------------------------------------------------------------ what the task needs
    def _usable(self, split: str) -> np.ndarray:
        """Clips of ``split`` that carry the task's target (ISLR: a label; CSLR: glosses; others: text)."""
        task = self.cfg.task.task
        idx = self.store.indices(split)
        if task == "islr":
            idx = idx[self.store.labels[idx] >= 0]
        elif task == "cslr":
            idx = np.array([i for i, g in zip(idx, self.store.gloss_lists(idx)) if len(g)], np.int64)
        else:
            idx = np.array([i for i, s in zip(idx, self.store.texts(idx)) if s.strip()], np.int64)
        if len(idx) == 0:
            need = {"islr": "a class label (the manifest's label column)",
                    "cslr": "a gloss sequence (the manifest's gloss column)"}.get(task, "a text (the manifest's text column)")
            raise ValueError(f"task {task}: none of the {len(self.store.indices(split))} clips of split {split!r} in "
                             f"{self.store.path} has {need}; convert the store with that column "
                             "(python -m slpfast.data.convert --help)")
        return idx

    def _resolve(self) -> None:
        """Sizes the heads need, fixed once and recorded in ``cfg.resolved`` (checkpointed)."""
        cfg, task, res = self.cfg, self.cfg.task.task, self.cfg.resolved
        if self.src.kind == "finetune":  # continue / evaluate: exactly the checkpoint's heads
            res.update(self.src.config.get("resolved", {}))
            return
        if task == "islr":
            res["num_classes"] = int(self.store.labels.max()) + 1
        elif task == "cslr":
            every = np.concatenate([self.store.indices(s) for s in [self.train_split] + self.eval_splits])
            res["num_glosses"] = int(max((int(g.max()) for g in self.store.gloss_lists(every) if len(g)), default=0)) + 1
        elif task == "slt" and not cfg.task.slt_model:
            from slpfast.data.collate import WordTokenizer

            res["vocab"] = WordTokenizer.from_texts(self.store.texts(self.train_indices)).itos[4:]
        elif task == "retrieval":
            info = pretrain_text_setup(self.src)
            kind = info.get("kind") or cfg.text.kind
            if kind == "auto":
                from slpfast.models.text_encoder import default_text_model_path

                kind = "minilm" if default_text_model_path() else "small"
            res["text"] = {"kind": kind, "path": info.get("path") or cfg.text.path,
                           "small_dim": info.get("small_dim") or cfg.text.small_dim,
                           "max_length": info.get("max_length") or cfg.text.max_length,
                           "embed_dim": info.get("proj_dim") or cfg.text.proj_dim}

    def _text_side(self):
        """Retrieval: the text encoder, and the name of its cached features in the store (used
        instead of running a frozen encoder every batch; never a set of another encoder)."""
        if self.cfg.task.task != "retrieval":
            return None, None
        from slpfast.models.text_encoder import build_text_encoder, pooled_feature_set

        tx = self.cfg.resolved["text"]
        enc = build_text_encoder(tx["kind"], tx["path"], dim=tx["small_dim"], max_length=tx["max_length"],
                                 attn_backend=self.cfg.model.attn_backend)
        if self.src.kind == "pretrain" and enc.trainable:
            load_strict(enc, self.src.state, "text_encoder.", self.src.path)
        if enc.trainable:
            return enc, None
        return enc, pooled_feature_set(enc, self.store.text_feature_names)  # retrieval reads pooled features only

    def build_model(self):
        cfg, t, res = self.cfg, self.cfg.task, self.cfg.resolved
        encoder = build_encoder(self.src)
        if t.task == "islr":
            model = ISLRModel(encoder, res["num_classes"], t.head_dropout, t.label_smoothing)
        elif t.task == "cslr":
            model = CSLRModel(encoder, res["num_glosses"], t.head_dropout, t.beam_size)
        elif t.task == "slt":
            vocab = None
            if "vocab" in res:
                from slpfast.data.collate import WordTokenizer

                vocab = WordTokenizer(res["vocab"])
            model = SLTModel(encoder, vocab, t.slt_model, t.slt_width, t.slt_layers, t.slt_heads, t.head_dropout,
                             t.slt_max_len, t.label_smoothing, t.slt_num_beams)
        else:
            text_enc = self.text_encoder
            model = RetrievalModel(encoder, text_enc.dim, res["text"]["embed_dim"], text_enc,
                                   cfg.text.init_temperature, cfg.text.backend)
            if self.src.kind == "pretrain" and pretrain_text_setup(self.src)["has_head"]:
                load_contrastive_head(model.head, self.src)
        if self.src.kind == "finetune":
            load_task_model(model, self.src, t.task)
        if t.freeze_encoder:
            model.encoder.requires_grad_(False)
            model.frozen_encoder = True
        return model

    def loss_keys(self) -> list[str]:
        return ["loss", {"islr": "ce", "cslr": "ctc", "retrieval": "nce", "slt": "ce"}[self.cfg.task.task]]

    # ------------------------------------------------------------------ loader
    def _whole_clips(self, indices: np.ndarray) -> np.ndarray:
        """The training clips of a sentence task that fit model.max_frames whole (a cropped clip
        would not show every gloss / word of its target); rank 0 says how many were left out."""
        longest = self.cfg.model.max_frames
        if self.cfg.data.augment:  # slowed down by the augmentation, it must still fit
            longest = longest_augmentable(longest)
        fits = self.store.lengths[indices] <= longest
        if fits.all():
            return indices
        if not fits.any():
            raise ValueError(f"task {self.cfg.task.task}: every training clip is longer than {longest} frames "
                             f"(model.max_frames={self.cfg.model.max_frames}, less the augmentation's slow-down); "
                             "raise model.max_frames (not over --init's) or set data.augment=false")
        if self.dist.is_main:
            print(f"slpfast.finetune: {int((~fits).sum())} of {len(indices)} training clips are longer than "
                  f"{longest} frames (model.max_frames={self.cfg.model.max_frames}, less the augmentation's slow-down) "
                  "and are left out: a cropped clip does not match its whole sentence target", flush=True)
        return indices[fits]

    def _loader(self, indices, *, train: bool, rank: int, world: int, batch_size: int):
        from slpfast.data.loader_torch import make_loader

        d = self.cfg.data
        # ISLR / retrieval train on random windows of data.max_frames (as pre-training). The sentence
        # tasks train on whole clips: a window would hide glosses / words the target still asks
        # for. Evaluation reads whole clips up to model.max_frames (a longer one: its centre).
        window = train and self.cfg.task.task not in SENTENCE_TASKS
        return make_loader(self.store, backend=d.loader if train else "torch", indices=indices,
                           batch_size=batch_size, shuffle=train, seed=self.cfg.train.seed, drop_last=train,
                           rank=rank, world_size=world, max_frames=d.max_frames if window else self.cfg.model.max_frames,
                           crop="random" if window else "center", channels=3,
                           num_workers=d.loader_workers(self.device) if train else 0,
                           text_features=self.feature_name, pin_memory=self.device.type == "cuda")

    def _build_loader(self):
        loader = self._loader(self.train_indices, train=True, rank=self.dist.rank, world=self.dist.world_size,
                              batch_size=self.cfg.data.batch_size)
        if len(loader) == 0:
            raise ValueError(f"data.batch_size={self.cfg.data.batch_size} x {self.dist.world_size} ranks is larger "
                             f"than the {len(self.train_indices)} training clips of split {self.train_split!r}")
        return loader

    # ------------------------------------------------------------------ per step
    def _pose(self, batch, device, seed: int | None):
        """-> (pose float32 on ``device``, conf on ``device``, lengths (B,) on the host)."""
        from slpfast.ops import augment_pose, normalize_pose

        nb = device.type == "cuda"  # the loader pins its batches for a GPU: copies need not block
        pose = batch["pose"].to(device, non_blocking=nb)
        conf = batch["conf"].to(device, non_blocking=nb)
        lengths = batch["lengths"].cpu()  # host lengths and clip ids: the pose ops read nothing back
        pose, conf = normalize_pose(pose, conf, lengths)
        if seed is not None:
            pose, conf, lengths = augment_pose(pose, conf, lengths, clip_ids=batch["clip_id"].cpu(), seed=seed,
                                               config=AUGMENT)
        return pose.float(), conf, lengths

    def prepare(self, batch: dict, step: int, micro: int, device: torch.device) -> dict:
        """Loader batch -> {"lengths", "model_kwargs"} for the task model's forward."""
        seed = _mix(self.cfg.train.seed, step, micro) if self.cfg.data.augment else None
        from slpfast._transfer import to_device

        pose, conf, host_lengths = self._pose(batch, device, seed)
        lengths = to_device(host_lengths, device)
        kw = dict(pose=pose, conf=conf, lengths=lengths)
        task = self.cfg.task.task
        if task == "islr":
            kw["label"] = to_device(batch["label"], device)
        elif task == "cslr":
            kw.update(gloss_ids=to_device(batch["gloss_ids"], device),
                      gloss_lengths=to_device(batch["gloss_lengths"], device))
        else:
            kw["texts"] = list(batch["text"])
            if task == "retrieval" and "text_features" in batch:
                kw["text_features"] = to_device(batch["text_features"], device)
        return {"lengths": lengths, "host_lengths": host_lengths, "model_kwargs": kw}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        """Metrics of ``model`` on ``split`` (every rank returns the same dict)."""
        idx = self._usable(split)
        mine = idx[self.dist.rank::self.dist.world_size]  # disjoint shards; no padding, no drops
        was_training = model.training
        model.eval()
        records = []
        bar = None
        if self.cfg.train.progress and self.dist.is_main and len(mine):
            from tqdm import tqdm

            # CSLR's beam search takes minutes on a CPU: say how far it is
            bar = tqdm(total=len(mine), desc=f"evaluating {split}", unit="clip", leave=False, dynamic_ncols=True)
        try:
            if len(mine):
                loader = self._loader(mine, train=False, rank=0, world=1, batch_size=self.cfg.task.eval_batch_size)
                for batch in loader:
                    pose, conf, lengths = self._pose(batch, self.device, None)
                    records.extend(model.predict(pose, conf, lengths.to(self.device), batch))
                    if bar is not None:
                        bar.update(int(lengths.shape[0]))
        finally:
            if bar is not None:
                bar.close()
        model.train(was_training)
        if self.dist.enabled:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, records)
            records = [r for part in gathered for r in part]
        metrics = compute_metrics(self.cfg.task.task, records)
        metrics["split"] = split
        return metrics
