"""The DALI loader: a parallel external source reading the store; GPU transfer + cast in DALI.

Pipeline (one per loader)::

    external_source(source=_DaliSource, parallel=True, batch=True, batch_info=True)
        -> pose / confidence of the batch, padded to the longest clip (``pad_to`` multiple)
           by one numba gather straight from the memory-mapped store: float16 bits when the
           pipeline has a GPU, float32 otherwise; lengths, clip ids, labels (dense batches);
           glosses, token ids, token features (one array per clip)
    fn.pad  glosses with -1, token ids with the pad id, token features with 0
    GPU:    .gpu() (float16 crosses PCIe: half the bytes of float32) -> fn.cast to float32,
            first C channels
    CPU:    the float32 batch as is

(Padding pose with ``fn.pad`` over per-clip arrays was ~10x slower on CPU than padding in
the callback: DALI copies every sample into shared memory, then pads, then casts.)

``_DaliSource`` is a stateless, picklable callable: batch ``k`` of epoch ``e`` is a pure
function of (store path, sampler settings, seed, e, k), computed in DALI's Python worker
processes (``py_num_workers``; started with ``fork`` while CUDA is not initialised in this
process, else ``spawn``). It uses the same
:class:`~slpfast.data.samplers.BatchPlan` as :class:`~slpfast.data.TorchLoader`, so both
loaders yield the same batches for the same seed (tested). The packed form is made from the
padded DALI output in the iterator (``pose[mask]``: clips stay in order).

Resume: ``state_dict()`` = (epoch, step); a loader built (or ``load_state_dict``-ed) at step
s of epoch e starts its pipeline there: the source maps DALI's (epoch_idx, iteration) to
(e + epoch_idx, iteration + s on the first epoch). Changing the position of a running
loader rebuilds its pipeline.

CPU pipelines (``device_id=None``) run where there is no GPU; with CUDA the outputs are
torch CUDA tensors on the current device.
"""
from __future__ import annotations

import sys

import numpy as np

from .collate import Collator, tokenize
from .samplers import build_sampler

__all__ = ["DaliLoader", "dali_available"]


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401

        return True
    except Exception:
        return False


class _DaliSource:
    """Picklable batch callback for ``fn.external_source(parallel=True, batch=True)``."""

    def __init__(self, source, sampler, collator: Collator, start_epoch: int, start_step: int, half: bool):
        self.source = source
        self.sampler = sampler
        self.collator = collator
        self.start_epoch = start_epoch
        self.start_step = start_step
        self.half = half  # float16 out (cast in DALI, on the GPU) or float32 from the numba gather
        self._plan = None
        self._buf = None

    def __setstate__(self, state):
        self.__dict__.update(state)
        from . import _kernels

        _kernels.serial_only()

    def plan(self, epoch):
        if self._plan is None or self._plan.epoch != epoch:
            self._plan = self.sampler.plan(epoch)
        return self._plan

    def _buffer(self, name, n, dtype):
        """A recycled output buffer: one that no returned batch still references (DALI may
        serialise a batch after the callback returned, so a buffer is reused only once the
        views handed out are gone: reference count)."""
        if self._buf is None:
            self._buf = {}
        pool = self._buf.setdefault(name, [])
        for k in range(len(pool)):
            if sys.getrefcount(pool[k]) <= 2 and pool[k].dtype == dtype:  # the list + the call
                if pool[k].size < n:
                    pool[k] = np.empty(n, dtype)
                return pool[k][:n]
        b = np.empty(max(n, 1), dtype)
        if len(pool) < 8:
            pool.append(b)
        return b[:n]

    def _pose(self, idx, st, ln):
        """Dense padded (B, T, J, C) pose and (B, T, J) confidence of one batch."""
        from ..layouts import NUM_JOINTS as J

        col = self.collator
        B = len(idx)
        T = int(np.max(ln))
        if col.pad_to > 1:
            T = -(-T // col.pad_to) * col.pad_to
        if not self.half:
            C = col.channels
            out = {"pose": self._buffer("p32", B * T * J * C, np.float32).reshape(B, T, J, C),
                   "conf": self._buffer("c32", B * T * J, np.float32).reshape(B, T, J)}
            self.source.gather(idx, starts=st, lengths=ln, channels=C, max_len=T, out=out)
            return out["pose"], out["conf"]
        from . import _kernels

        src = self.source
        p = self._buffer("p16", B * T * J * 3, np.uint16).reshape(B, T * J * 3)
        c = self._buffer("c16", B * T * J, np.uint16).reshape(B, T * J)
        _kernels.gather_padded_half(*src.typed_shards(), J, src.shard_of[idx].astype(np.int64),
                                    src.frame_start[idx] + np.asarray(st, np.int64), np.asarray(ln, np.int64), p, c)
        return p.view(np.float16).reshape(B, T, J, 3), c.view(np.float16).reshape(B, T, J)

    def position(self, info) -> tuple[int, int]:
        epoch = self.start_epoch + info.epoch_idx
        step = info.iteration + (self.start_step if info.epoch_idx == 0 else 0)
        return epoch, step

    def __call__(self, info):
        from . import _kernels

        _kernels.thread_serial()  # the DALI workers are the parallelism
        epoch, step = self.position(info)
        plan = self.plan(epoch)
        if step >= len(plan):
            raise StopIteration
        idx, st, ln = plan.batch(step)
        src = self.source
        col = self.collator
        pose, conf = self._pose(idx, st, ln)
        one = lambda v: np.asarray(v, np.int64).reshape(-1)  # noqa: E731  (a dense batch of 0-d samples)
        gl = [np.asarray(g, np.int64) for g in src.gloss_lists(idx)]
        outs = [pose, conf, one(ln), one(idx), one(src.labels[idx]), gl, one([len(g) for g in gl])]
        if col.tokenizer is not None:
            ids, _ = tokenize(col.tokenizer, src.texts(idx), col.max_text_len)
            m = col.max_text_len
            ids = [np.asarray(x[:m] if m else x, np.int64) for x in ids]
            outs += [ids, one([len(x) for x in ids])]
        if col.text_features is not None:
            pooled, toks = src.text_features(col.text_features, idx)
            m = col.max_text_len
            toks = [np.ascontiguousarray(t[:m] if m else t, np.float32) for t in toks]
            outs += [[np.ascontiguousarray(p) for p in pooled], toks, one([t.shape[0] for t in toks])]
        return tuple(outs)


class DaliLoader:
    """Resumable DALI loader with the same arguments and batches as :class:`~slpfast.data.TorchLoader`.

    Extra args: ``py_num_workers`` (DALI Python workers, default ``num_workers`` or 2),
    ``prefetch_queue_depth`` (batches computed ahead, default 2), ``num_threads`` (DALI CPU
    threads), ``device`` ("cuda"/"cuda:N" or None: CUDA when available). TorchLoader-only
    arguments (``prefetch_factor``, ``pin_memory``, ``multiprocessing_context``, ``workers``,
    ``reuse_buffers``) are accepted and ignored, so both take the same keyword arguments.
    """

    def __init__(self, source, *, split=None, indices=None, mixture=None, batch_size=None, max_tokens=None,
                 packed=False, shuffle=True, seed=0, drop_last=False, rank=None, world_size=None, max_frames=None,
                 crop="random", max_batch_size=None, bucket_size=4096, channels=3, tokenizer=None,
                 max_text_len=None, text_features="auto", pad_to=1, num_workers=None, py_num_workers=None,
                 prefetch_queue_depth=2, num_threads=2, device="auto", prefetch_factor=None, pin_memory=None,
                 multiprocessing_context=None, py_start_method="auto", workers=None, reuse_buffers=None):
        import torch

        self.source = source
        self.sampler = build_sampler(source, split=split, indices=indices, mixture=mixture, batch_size=batch_size,
                                     max_tokens=max_tokens, packed=packed, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last, rank=rank, world_size=world_size, max_frames=max_frames,
                                     crop=crop, max_batch_size=max_batch_size, bucket_size=bucket_size)
        self.collator = Collator(source, packed=packed, channels=channels, tokenizer=tokenizer,
                                 max_text_len=max_text_len, text_features=text_features, pad_to=pad_to)
        self.packed = packed
        self.channels = channels
        workers = py_num_workers if py_num_workers is not None else (num_workers or 2)
        self.py_num_workers = max(1, int(workers))
        self.prefetch_queue_depth = prefetch_queue_depth
        self.num_threads = num_threads
        self.py_start_method = py_start_method
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else None
        self.device = torch.device(device) if device is not None else None
        if self.device is not None and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if batch_size is not None:
            self.max_batch = int(batch_size)
        else:
            sel = self.sampler.indices if self.sampler.indices is not None else np.arange(len(source))
            shortest = max(1, int(np.minimum(source.lengths[sel], self.sampler.max_frames).min())) if len(sel) else 1
            self.max_batch = max(1, min(self.sampler.max_batch_size, self.sampler.max_tokens // shortest))
        self.epoch = 0
        self.step = 0
        self._pipe = None
        self._pipe_pos = None  # (epoch, step) the pipeline will produce next
        self._plan_cache = None
        self._names = None

    # ------------------------------------------------------------------ state (as TorchLoader)
    def plan(self, epoch=None):
        e = self.epoch if epoch is None else epoch
        if self._plan_cache is None or self._plan_cache.epoch != e:
            self._plan_cache = self.sampler.plan(e)
        return self._plan_cache

    def __len__(self):
        return len(self.plan())

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = int(epoch), 0

    def state_dict(self) -> dict:
        return self.sampler.loader_state(self.epoch, self.step)

    def load_state_dict(self, state: dict) -> None:
        from .samplers import check_loader_state

        check_loader_state(state, self.sampler)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    # ------------------------------------------------------------------ pipeline
    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        col = self.collator
        gpu = self.device is not None and self.device.type == "cuda"
        src = _DaliSource(self.source, self.sampler, col, self.epoch, self.step, half=gpu)
        names = ["pose16", "conf16", "lengths", "clip_id", "label", "gloss_ids", "gloss_lengths"]  # pose16/conf16: float32 on CPU
        if col.tokenizer is not None:
            names += ["text_ids", "text_lengths"]
        if col.text_features is not None:
            names += ["text_features", "text_token_features", "text_token_lengths"]
        pad_id = 0
        if col.tokenizer is not None:
            pad_id = getattr(col.tokenizer, "pad_token_id", 0) or 0
        C = self.channels
        start = self.py_start_method
        if start == "auto":  # fork is much faster to start, but DALI refuses it once CUDA is up
            import torch

            from . import _kernels

            start = "spawn" if (torch.cuda.is_initialized() or _kernels.parallel_started()) else "fork"

        @pipeline_def(batch_size=self.max_batch, num_threads=self.num_threads,
                      device_id=self.device.index if gpu else None, py_num_workers=self.py_num_workers,
                      py_start_method=start, prefetch_queue_depth=self.prefetch_queue_depth, seed=0,
                      exec_dynamic=True)
        def pipe():
            outs = fn.external_source(source=src, num_outputs=len(names), parallel=True, batch=True,
                                      batch_info=True, prefetch_queue_depth=self.prefetch_queue_depth)
            o = dict(zip(names, outs))
            x, c = o["pose16"], o["conf16"]
            if gpu:  # float16 over PCIe, cast to float32 on the GPU
                x = fn.cast(x.gpu(), dtype=types.FLOAT)
                c = fn.cast(c.gpu(), dtype=types.FLOAT)
                if C != 3:
                    x = x[:, :, 0:C]
            res = [x, c]
            for n in names[2:]:
                v = o[n]
                if n == "gloss_ids":
                    v = fn.pad(v, axes=(0,), fill_value=-1)
                elif n == "text_ids":
                    v = fn.pad(v, axes=(0,), fill_value=pad_id)
                elif n == "text_token_features":
                    v = fn.pad(v, axes=(0,), fill_value=0)
                res.append(v)
            return tuple(res)

        p = pipe()
        p.build()
        self._pipe = p
        self._names = ["pose", "conf"] + names[2:]
        self._pipe_pos = (self.epoch, self.step)
        self._pipe_epoch0 = self.epoch

    def _to_torch(self, out):
        import torch
        from nvidia.dali.plugin.pytorch.torch_utils import feed_ndarray, to_torch_type
        from nvidia.dali.tensors import TensorListGPU

        res = {}
        stream = torch.cuda.current_stream(self.device) if (self.device is not None and self.device.type == "cuda") else None
        for name, tl in zip(self._names, out):
            t = tl.as_tensor()
            if isinstance(tl, TensorListGPU):  # copy on torch's stream (DALI's buffer is recycled)
                arr = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device=self.device)
                if arr.numel():
                    feed_ndarray(t, arr, cuda_stream=stream)
            else:
                # zero copy: with DALI's dynamic executor an output owns its memory for as long
                # as it is referenced (a fresh 50 MB allocation per batch costs more than the
                # whole gather on this machine: page faults)
                arr = torch.from_dlpack(t) if t.shape() and np.prod(t.shape()) else \
                    torch.empty(t.shape(), dtype=to_torch_type[t.dtype])
                if self.device is not None:
                    arr = arr.to(self.device, non_blocking=True)
            res[name] = arr
        return res

    def _finish(self, b: dict) -> dict:
        import torch

        ids = b["clip_id"].cpu().numpy()
        b["text"] = self.source.texts(ids)
        if "text_token_lengths" in b and "text_lengths" not in b:
            b["text_lengths"] = b["text_token_lengths"]
        if self.packed:
            lengths = b["lengths"]
            T = b["pose"].shape[1]
            mask = torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]
            mask = mask.to(b["pose"].device)
            b["pose"] = b["pose"][mask]
            b["conf"] = b["conf"][mask]
            cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=lengths.device)
            cu[1:] = torch.cumsum(lengths, 0).to(torch.int32)
            b["cu_seqlens"] = cu
        order = ["pose", "conf", "lengths"] + (["cu_seqlens"] if self.packed else []) + \
            ["clip_id", "label", "gloss_ids", "gloss_lengths", "text"]
        if "text_ids" in b:
            order += ["text_ids", "text_lengths"]
        if "text_features" in b:
            order += ["text_features", "text_token_features", "text_token_lengths"]
            if "text_ids" not in b:
                order.append("text_lengths")
        return {k: b[k] for k in order}

    def close(self) -> None:
        self._pipe = None

    def __iter__(self):
        plan = self.plan()
        # a finished epoch (state saved after its last batch): move on; not an empty epoch at its
        # step 0, which is run (no batches) and counted once, at the end (as the torch loader)
        if self.step >= len(plan) and self.step > 0:
            self.epoch, self.step = self.epoch + 1, 0
            plan = self.plan()
        if self._pipe is None or self._pipe_pos != (self.epoch, self.step):
            self._pipe = None
            self._build()
        while self.step < len(plan):
            try:
                out = self._pipe.run()
            except StopIteration:  # pragma: no cover (the plan says how many batches there are)
                break
            self.step += 1
            self._pipe_pos = (self.epoch, self.step)
            yield self._finish(self._to_torch(out))
        # end of epoch: drain the source's StopIteration, then reset for the next epoch
        try:
            self._pipe.run()
            raise RuntimeError("DALI pipeline produced more batches than the plan")
        except StopIteration:
            pass
        self._pipe.reset()
        self.epoch, self.step = self.epoch + 1, 0
        self._pipe_pos = (self.epoch, 0)
