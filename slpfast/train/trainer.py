"""The pre-training loop.

One :class:`Trainer` per process (``torchrun`` starts one per GPU or CPU slot):

- DDP over NCCL (GPU) or gloo (CPU); bf16 autocast on GPU; optional ``torch.compile``;
- gradient accumulation (``no_sync`` on all but the last micro-batch) and norm clipping;
- AdamW + warmup/cosine (:mod:`slpfast.train.optim`);
- a non-finite loss or gradient on ANY rank skips the step on every rank (an all-reduced flag
  keeps the ranks in lock-step) and is counted; ``train.max_nonfinite`` in a row aborts;
- on a GPU the step waits for the device twice: for the contrastive loss's scale and for one
  summary at its end, which ``run()`` reads after queuing the next step (:meth:`issue_step`);
- checkpoints every ``train.ckpt_every`` steps, at the end and on SIGTERM or a first Ctrl-C
  (then a clean exit);
  ``train.resume=auto`` continues from the latest one bit-for-bit on CPU;
- logs (:mod:`slpfast.train.logging`) and, at the end, the encoder exported as safetensors.

The data side (store, loader, normalization, augmentation, masks) is in :mod:`slpfast.train.data`.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import os
import signal
import time

import torch
from torch import nn

from slpfast.train import checkpoint as ckpt
from slpfast.train import distributed as D
from slpfast.train.config import PretrainConfig
from slpfast.train.logging import IntervalMeter, RunLogger, peak_memory_gib
from slpfast.train.optim import build_optimizer, build_scheduler
from slpfast.train.pending import PendingStep

#: dense bf16 peak FLOP/s per GPU used for MFU (vendor specs), matched against the device name
#: in this order: the PCIe / NVL boards of a chip clock lower than its SXM board, so they come first
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("H100", 989e12),
              ("H200", 989e12), ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12))


class NonFiniteLossError(RuntimeError):
    """Raised after ``train.max_nonfinite`` consecutive non-finite steps."""


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS if k in name), None)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def _run_kind(config: dict) -> str:
    """'fine-tuning' or 'pre-training', from a run's config dict (fine-tuning has a [task])."""
    return "fine-tuning" if "task" in config else "pre-training"


class ResumeError(ValueError):
    """The checkpoint to resume from is unreadable or does not fit this run (a configuration error)."""


def _check_same_shapes(own: dict, theirs: dict, path: str, their_cfg: dict, cfg) -> None:
    """Raise :class:`ResumeError` naming the differing tensors (and [model] settings) when the
    checkpoint's model does not have this run's tensors and shapes."""
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = sorted(k for k in set(own) & set(theirs) if tuple(own[k].shape) != tuple(theirs[k].shape))
    if not (missing or unexpected or shapes):
        return
    mine = getattr(cfg, "model", None)
    mine = dataclasses.asdict(mine) if dataclasses.is_dataclass(mine) else {}
    cfg_diff = [f"model.{k}: checkpoint {v!r}, this run {mine[k]!r}" for k, v in (their_cfg.get("model") or {}).items()
                if k in mine and mine[k] != v]
    parts = [f"{what} {len(xs)} ({', '.join(xs[:4])}{', ...' if len(xs) > 4 else ''})"
             for what, xs in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if xs]
    raise ResumeError(f"train.resume: {path} holds a model of another shape than this run's "
                      f"({'; '.join(parts)})" + (f"; config differs: {'; '.join(cfg_diff)}" if cfg_diff else "")
                      + "; use the same [model] settings or another train.out_dir")


#: optimizer settings a resumed run may change (its config's values replace the checkpoint's)
_OPTIM_SETTINGS = ("lr", "weight_decay", "beta1", "beta2", "eps", "warmup_steps", "min_lr_ratio")


class Trainer:
    """Build everything from a validated :class:`PretrainConfig`, then :meth:`run`."""

    def __init__(self, cfg: PretrainConfig, data_factory=None):
        """``data_factory(cfg, dist)`` builds the data + model provider (default :class:`PretrainData`;
        ``slpfast.finetune`` passes its task's)."""
        from slpfast.train import data as data_mod

        self.cfg = cfg.validate()
        tr = cfg.train
        self.dist = D.setup(tr.device)
        self.device = self.dist.device
        if self.device.type == "cpu":
            threads = tr.threads or max(1, (os.cpu_count() or 1) // max(1, self.dist.local_world_size))
            torch.set_num_threads(threads)
        self.out_dir = os.path.abspath(os.path.expanduser(tr.out_dir))
        self.bf16 = tr.precision == "bf16" or (tr.precision == "auto" and self.device.type == "cuda")
        if self.device.type == "cuda":  # fp32 leftovers (losses, norms) may use TF32 tensor cores
            torch.set_float32_matmul_precision("high")
        torch.manual_seed(tr.seed)  # identical init on every rank (DDP also broadcasts it)

        self.data = (data_factory or data_mod.PretrainData)(cfg, self.dist)
        model = self.data.build_model().to(self.device)
        self.model_flops_per_frame, self.attn_flops_coeff = data_mod.flops_coefficients(model)
        self.raw_model = model
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, tr.steps)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if tr.compile:
            model = torch.compile(model)
        self.model = model
        #: steps queued ahead of the one whose results are read (run()): on a GPU the host loads
        #: and prepares batch k+1 while step k runs; on the CPU nothing runs ahead of the host
        self.pipeline_depth = 1 if self.device.type == "cuda" else 0
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_streak = 0  # non-finite steps in a row, up to the last step accounted
        self.resume_notes: list[str] = []
        self._archive_pending = False
        self._set_aside_after: int | None = None
        self._stop_signal = False
        self.history: list[dict] = []  # interval records (every rank keeps them; rank 0 writes)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        """Full checkpoint payload; collective (gathers every rank's loader + RNG state)."""
        mine = {"loader": self.data.loader_state(), "rng": ckpt.capture_rng()}
        ranks = [None] * self.dist.world_size
        if self.dist.enabled:
            torch.distributed.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        return {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "ranks": ranks, "config": self.cfg.to_dict(),
                "world_size": self.dist.world_size,
                "extra": {"nonfinite_total": self.nonfinite_total, "nonfinite_streak": self.nonfinite_streak}}

    def save(self) -> str:
        """Write the checkpoint of this step (rank 0); collective. A write that fails (a full disk)
        raises :class:`~slpfast.train.checkpoint.CheckpointWriteError` on every rank: rank 0
        shares its outcome, so the others do not wait for it in a barrier until the group's
        timeout."""
        state = self._state()
        outcome = None
        if self.dist.is_main:
            try:
                outcome = ("ok", ckpt.save_checkpoint(self.out_dir, self.step, state, self.cfg.train.keep_last))
            except ckpt.CheckpointWriteError as e:
                outcome = ("error", str(e))
            except Exception as e:  # not the file system's: rank 0 shows its traceback, the others stop too
                D.broadcast_object(("error", f"rank 0 failed to save the checkpoint of step {self.step} "
                                             f"({type(e).__name__}: {e})"), self.dist)
                raise
        kind, value = D.broadcast_object(outcome, self.dist)
        if kind == "error":
            raise ckpt.CheckpointWriteError(value)
        return value

    def maybe_resume(self) -> str | None:
        # rank 0 looks; every rank learns the answer, a failure included (a rank-0-only raise
        # would leave the others waiting in the broadcast until their peer's socket closed)
        found = None
        if self.dist.is_main:
            try:
                found = ("path", ckpt.resolve_resume(self.cfg.train.resume, self.out_dir))
            except ValueError as e:
                found = ("error", str(e))
        kind, path = D.broadcast_object(found, self.dist)
        if kind == "error":
            raise ResumeError(path)
        if path is None:
            return None
        try:
            state = ckpt.load_checkpoint(path, map_location="cpu")
        except ValueError as e:
            # a damaged latest checkpoint found by auto (a crash mid-copy): the earlier ones remain
            hint = "; delete it to resume from the one before" if self.cfg.train.resume == "auto" else ""
            raise ResumeError(f"train.resume: {e}{hint}") from None
        theirs, mine = _run_kind(state.get("config") or {}), _run_kind(self.cfg.to_dict())
        if theirs != mine:
            raise ResumeError(f"train.resume: {path} is a {theirs} checkpoint and this is a {mine} run"
                              + ("; to start fine-tuning from it, give it as --init" if mine == "fine-tuning" else ""))
        if state["world_size"] != self.dist.world_size:
            raise ResumeError(f"train.resume: {path} was written by {state['world_size']} ranks, this run has "
                              f"{self.dist.world_size}; per-rank loader and RNG states cannot be remapped")
        _check_same_shapes(self.raw_model.state_dict(), state["model"], path, state.get("config", {}), self.cfg)
        try:
            self.raw_model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ResumeError(f"train.resume: {path} does not fit this run's model/optimizer "
                              f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        mine = state["ranks"][self.dist.rank]
        try:
            self.data.load_loader_state(mine["loader"])
        except ValueError as e:
            raise ResumeError(f"train.resume: {path}: {e}") from None
        ckpt.restore_rng(mine["rng"])
        self.step = int(state["step"])
        self.nonfinite_total = int(state.get("extra", {}).get("nonfinite_total", 0))
        # a run preempted in a streak of non-finite steps goes on counting it toward max_nonfinite
        self.nonfinite_streak = int(state.get("extra", {}).get("nonfinite_streak", 0))
        self.resume_notes = self._apply_new_optim_settings(state.get("config") or {})
        # the checkpoints past this step belong to an abandoned branch: moved aside once the
        # resumed run has run a step (a resume that fails at start-up moves nothing)
        self._set_aside_after = self.step if self.dist.is_main else None
        return path

    def _apply_new_optim_settings(self, their_cfg: dict) -> list[str]:
        """After a resume: the optimizer settings and ``train.steps`` of *this* run's config apply
        from here on (the loaded optimizer and scheduler states carry the checkpoint's). Returns
        one note per changed setting, for the log."""
        o, old = self.cfg.optim, their_cfg.get("optim") or {}
        steps, old_steps = self.cfg.train.steps, (their_cfg.get("train") or {}).get("steps", self.cfg.train.steps)
        changed = [k for k in _OPTIM_SETTINGS if k in old and old[k] != getattr(o, k)]
        groups = self.optimizer.param_groups
        if changed:
            for g in groups:
                g["betas"], g["eps"] = (o.beta1, o.beta2), o.eps
            groups[0]["weight_decay"] = o.weight_decay  # the decayed group (optim.param_groups); the other stays 0
        if old.get("lr") and "lr" in changed:  # rescale, keeping any ratio between groups
            self.scheduler.base_lrs = [b * o.lr / old["lr"] for b in self.scheduler.base_lrs]
        # The rate of the next step, from this run's schedule (its function reads this run's
        # warmup_steps, min_lr_ratio and train.steps): LambdaLR's own formula, so an unchanged
        # config restores exactly the saved rates.
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for g, base in zip(groups, self.scheduler.base_lrs):
            g["initial_lr"], g["lr"] = base, base * factor
        self.scheduler._last_lr = [g["lr"] for g in groups]
        notes = [f"optim.{k} changed since the checkpoint ({old[k]!r} -> {getattr(o, k)!r}); the new value "
                 "applies from here on" for k in changed]
        if old_steps != steps:
            notes.append(f"train.steps changed since the checkpoint ({old_steps} -> {steps}): the cosine schedule "
                         f"now ends at step {steps} (learning rate {groups[0]['lr']:.3g} at step {self.step})")
        if self.step >= steps:
            notes.append(f"the checkpoint is at step {self.step}, already at train.steps={steps}: nothing to train "
                         "(raise train.steps to train on)")
        return notes

    # ------------------------------------------------------------------ one step
    def _micro_steps(self):
        """Yield (batch, data_seconds) for one optimizer step's micro-batches."""
        for _ in range(self.cfg.optim.accum_steps):
            t0 = time.perf_counter()
            batch = self.data.next_batch(self.step)
            yield batch, time.perf_counter() - t0

    def train_step(self) -> tuple[dict[str, float] | None, dict]:
        """One optimizer step. Returns (loss terms or None if skipped, counters).

        The step reads the device once, at its end, when all its work is queued: the loss
        terms, the gradient norm and the flags come back in one copy (see :meth:`issue_step`,
        which leaves that read to the caller).
        """
        return self.issue_step().result()

    def issue_step(self) -> PendingStep:
        """Queue one optimizer step; its results come from ``.result()`` of the return value.

        Nothing here waits for the GPU (the batch lengths are on the host, see
        ``PretrainData.prepare``), so the kernels of the forward, backward and optimizer run
        back to back. A non-finite loss or gradient norm on any rank (flags all-reduced on the
        device) skips the optimizer update on the device: the fused AdamW takes a
        ``found_inf`` flag, as under a GradScaler. The same flags carry SIGTERM (``stop``).
        """
        accum = self.cfg.optim.accum_steps
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        stats = {"clips": 0, "frames": 0, "data_s": 0.0, "flops": 0.0}
        terms, keys = [], []
        for micro, (batch, data_s) in enumerate(self._micro_steps()):
            stats["data_s"] += data_s
            inputs = self.data.prepare(batch, self.step, micro, self.device)
            host = inputs.get("host_lengths")  # a provider without them costs a read of its device lengths
            host = (inputs["lengths"].cpu() if host is None else host).tolist()
            stats["clips"] += len(host)
            frames, sq = float(sum(host)), float(sum(n * n for n in host))
            stats["frames"] += int(frames)
            stats["flops"] += self.model_flops_per_frame * frames + self.attn_flops_coeff * sq
            last = micro == accum - 1
            sync_ctx = self.model.no_sync() if (self.dist.enabled and not last and hasattr(self.model, "no_sync")) \
                else contextlib.nullcontext()
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
            with sync_ctx:
                with autocast:
                    out = self.model(**inputs["model_kwargs"])
                (out["loss"] / accum).backward()
            keys = list(out.keys())
            terms.append(torch.stack([v.detach().float() for v in out.values()]))
        mean_terms = torch.stack(terms).mean(0)  # (terms,): the mean over micro-batches
        clip = self.cfg.optim.grad_clip
        params = [p for p in self.raw_model.parameters() if p.grad is not None]
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf")).float()
        else:  # nothing got a gradient (clip_grad_norm_ would return a CPU zero)
            norm = torch.zeros((), device=self.device)
        bad = (~torch.isfinite(mean_terms).all() | ~torch.isfinite(norm)).float()
        # SIGTERM so far; torch.full fills on the device (torch.tensor would copy from the host
        # and synchronize the stream after the copy)
        stop = torch.full((), 1.0 if self._stop_signal else 0.0, device=self.device)
        flags = D.all_reduce(torch.stack([bad, stop]), self.dist, "max")
        self._optimizer_step(found_inf=flags[0])
        self.scheduler.step()  # the schedule follows the step counter, skipped or not
        self.step += 1
        stats["lr"] = self.scheduler.get_last_lr()[0]  # what the log reports: the rate from here on
        return PendingStep(self.step, torch.cat([flags, norm.reshape(1), mean_terms]), keys, stats)

    def _optimizer_step(self, found_inf: torch.Tensor) -> None:
        """Optimizer step, skipped on the device where ``found_inf`` (0-dim float, 0 or 1) is 1:
        the fused AdamW of :func:`build_optimizer` reads the ``found_inf`` attribute GradScaler
        uses (an unfused optimizer would refuse it)."""
        self.optimizer.found_inf, self.optimizer.grad_scale = found_inf.float().reshape(()), None
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf, self.optimizer.grad_scale

    # ------------------------------------------------------------------ the loop
    def _on_sigterm(self, signum, frame):  # noqa: ARG002
        self._stop_signal = True

    def _on_sigint(self, signum, frame):  # noqa: ARG002
        """Ctrl-C: the first one stops like SIGTERM (the step in flight finishes, a checkpoint is
        saved); a second one aborts at once, as Python's default would."""
        if self._stop_signal:
            raise KeyboardInterrupt
        self._stop_signal = True
        if self.dist.is_main:  # os.write: a print here could re-enter a stream the loop is writing
            os.write(2, b"\nslpfast: interrupted; stopping after this step with a checkpoint "
                        b"(Ctrl-C again to abort without one)\n")

    def run(self) -> dict:
        """Train to ``train.steps`` (or SIGTERM / Ctrl-C); returns a summary dict."""
        tr = self.cfg.train
        resumed = self.maybe_resume()
        # a fresh run moves an earlier run in out_dir aside, once its own first step has run (a
        # run that fails at start-up, e.g. on a backend that cannot take the batch, moves nothing)
        self._archive_pending = not resumed and self.step == 0 and self.dist.is_main  # step > 0: resumed before run()
        prev = signal.signal(signal.SIGTERM, self._on_sigterm)
        prev_int = signal.signal(signal.SIGINT, self._on_sigint)
        logger = RunLogger(self.out_dir, enabled=self.dist.is_main, total_steps=tr.steps, start_step=self.step,
                           progress=tr.progress, tensorboard=tr.tensorboard,
                           name="finetune" if hasattr(self.cfg, "task") else "pretrain")
        if resumed:
            logger.message(f"resumed from {resumed} at step {self.step}")
            for note in self.resume_notes:
                logger.message(f"train.resume: {note}")
        if self.cfg.optim.warmup_steps >= tr.steps:
            logger.message(f"note: optim.warmup_steps={self.cfg.optim.warmup_steps} >= train.steps={tr.steps}: the "
                           f"learning rate stays in its warmup and never reaches optim.lr={self.cfg.optim.lr:g}")
        meter = IntervalMeter()
        keys = self.data.loss_keys()
        status = "completed"
        # resumed at or past train.steps: nothing runs, and nothing is saved or exported again
        # (the checkpoint would be rewritten with this invocation's settings)
        nothing_to_do = bool(resumed) and self.step >= tr.steps
        peak = _peak_flops(self.device)
        try:
            queue: collections.deque[PendingStep] = collections.deque()
            while self.step < tr.steps and status == "completed":
                queue.append(self.issue_step())
                # a checkpoint must hold the state after its step: nothing may be queued past it
                ckpt_due = tr.ckpt_every and self.step % tr.ckpt_every == 0 and self.step < tr.steps
                while queue and (ckpt_due or len(queue) > self.pipeline_depth):
                    losses, st = queue.popleft().result()
                    self._account(losses, st, meter, keys, logger, peak)
                    if st["stop"] and st["step"] < tr.steps:  # SIGTERM on some rank: every rank stops
                        status = "preempted"
                if ckpt_due and status == "completed":
                    self.save()
            while queue:  # what is still in flight (a preempted run saves after it)
                losses, st = queue.popleft().result()
                self._account(losses, st, meter, keys, logger, peak)
            if meter.steps or meter.skipped:  # a preempted run's last, partial interval
                self._log_interval(meter, keys, logger, peak, self.step, self.scheduler.get_last_lr()[0])
            path = None if nothing_to_do else self.save()
            if status == "completed" and not nothing_to_do:
                export = self.export()
                if export:
                    logger.message(f"exported the pose encoder to {export}")
            logger.message(f"{status} at step {self.step}; checkpoint {path}" if path else f"{status} at step {self.step}")
        finally:
            signal.signal(signal.SIGTERM, prev)
            signal.signal(signal.SIGINT, prev_int)
            logger.close()
        return {"status": status, "step": self.step, "history": self.history, "nonfinite_total": self.nonfinite_total}

    def _account(self, losses, st: dict, meter: IntervalMeter, keys: list[str], logger: RunLogger,
                 peak: float | None) -> None:
        """Book one finished step: meters, progress, logs, the non-finite counts (raises
        :class:`NonFiniteLossError` after ``train.max_nonfinite`` in a row)."""
        tr = self.cfg.train
        step = st["step"]
        if self._archive_pending:
            self._archive_previous_run(logger)
        if self._set_aside_after is not None:
            resumed_at, self._set_aside_after = self._set_aside_after, None
            moved = ckpt.set_aside_later_checkpoints(self.out_dir, resumed_at)
            if moved:
                logger.message(f"train.resume: the checkpoints after step {resumed_at} of the abandoned run were "
                               f"moved to {moved}")
        if losses is None:
            self.nonfinite_streak += 1
            self.nonfinite_total += 1
            meter.skipped += 1
            logger.message(f"step {step}: non-finite loss or gradient, step skipped "
                           f"({self.nonfinite_streak} in a row, {self.nonfinite_total} total)")
            if self.nonfinite_streak >= tr.max_nonfinite:
                raise NonFiniteLossError(f"{self.nonfinite_streak} consecutive non-finite steps "
                                         f"(train.max_nonfinite={tr.max_nonfinite}); aborting")
        else:
            self.nonfinite_streak = 0
            meter.add(losses, st["clips"], st["frames"], st["data_s"], st["grad_norm"], st["flops"])
        logger.advance(1, {"loss": f"{losses['loss']:.4f}"} if losses else None)
        if step % tr.log_every == 0 or step == tr.steps:
            self._log_interval(meter, keys, logger, peak, step, st["lr"])
            meter.reset()

    def _archive_previous_run(self, logger: RunLogger) -> None:
        """Move an earlier run's checkpoints and logs in out_dir aside (rank 0, a fresh run, before
        it writes its first record)."""
        self._archive_pending = False
        tr = self.cfg.train
        export = tr.export if tr.export and not os.path.isabs(tr.export) else ""
        archived = ckpt.archive_previous_run(self.out_dir, (export, *ckpt.RESULT_FILES))
        if archived:
            logger.message(f"a fresh run: the earlier run in {self.out_dir} was moved to {archived} "
                           "(use --train.resume=auto to continue a run instead)")

    def _log_interval(self, meter: IntervalMeter, keys: list[str], logger: RunLogger, peak: float | None,
                      step: int, lr: float) -> None:
        totals = meter.totals(keys)  # host numbers; NCCL reduces device tensors only
        if self.dist.enabled:
            totals = D.all_reduce(totals.to(self.device), self.dist, "sum").cpu()
        elapsed = max(time.perf_counter() - meter.t0, 1e-9)
        clips, frames, flops, data_s = (float(x) for x in totals[:4])
        steps = float(totals[-1]) / self.dist.world_size  # summed over ranks
        # mean over ranks and steps; an interval whose every step was skipped has none (None in
        # the JSONL, "-" in the line), not a loss and a gradient norm of 0
        losses = (totals[4:-1] / float(totals[-1])).tolist() if float(totals[-1]) > 0 else [None] * len(keys)
        rec = {"step": step, "total_steps": self.cfg.train.steps}
        rec.update({f"loss/{k}": v for k, v in zip(keys, losses)})
        rec.update({
            "lr": lr,
            "grad_norm": meter.grad_norm_sum / meter.steps if meter.steps else None,
            "clips_per_s": clips / elapsed, "frames_per_s": frames / elapsed,
            "data_wait": data_s / self.dist.world_size / elapsed,
            "mfu": (flops / elapsed / (peak * self.dist.world_size)) if peak else None,
            "peak_mem_gib": peak_memory_gib(self.device), "skipped": meter.skipped, "steps_in_interval": steps,
        })
        self.history.append(rec)
        logger.write(rec)

    def export(self) -> str | None:
        """Write the pose encoder as safetensors (rank 0); returns the path."""
        name = self.cfg.train.export
        if not name:
            return None
        path = name if os.path.isabs(name) else os.path.join(self.out_dir, name)
        error = None
        if self.dist.is_main:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _unwrap(self.model).encoder.save_pretrained(path)
            except (OSError, RuntimeError) as e:  # a full disk: said in one line, on every rank (as save())
                reason = ckpt.os_reason(e)
                if reason is None:
                    raise
                error = (f"train.export: cannot write the encoder to {path} ({reason}); the last checkpoint "
                         f"in {ckpt.checkpoint_dir(self.out_dir)} holds the trained model")
        error = D.broadcast_object(error, self.dist)
        if error:
            raise ckpt.CheckpointWriteError(error)
        return path

    def close(self) -> None:
        """Stop the loader's worker threads / processes and leave the process group."""
        close_loader = getattr(getattr(self.data, "loader", None), "close", None)
        if close_loader is not None:
            close_loader()
        if self.model is not self.raw_model:
            # The DDP wrapper's reducer holds the process group. Freed last (when the trainer goes,
            # at the process's end), it destroyed the Gloo group holding the GIL, joining worker
            # threads of which one could be freeing its last collective's tensors and waiting for
            # the GIL: a hang after a finished run (seen after the final checkpoint's broadcast).
            # Freed here, while the group is still registered, the group goes in
            # destroy_process_group, which releases the GIL while the workers finish.
            self.model = self.raw_model
            gc.collect()
        D.cleanup(self.dist)
