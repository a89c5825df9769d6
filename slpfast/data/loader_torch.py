"""The plain-torch loader: a ``torch.utils.data.DataLoader`` over planned batches.

::

    from slpfast.data import Store, TorchLoader
    store = Store("runs/synthetic")
    loader = TorchLoader(store, split="sentence_train", batch_size=64, seed=0, num_workers=2)
    for batch in loader:            # one epoch; iterate again for the next
        batch["pose"]               # float32 (B, T, 123, 3), see slpfast.data.collate
    state = loader.state_dict()     # {"epoch", "step", ...}: resume mid-epoch with
    loader.load_state_dict(state)   # load_state_dict on a freshly built loader

Batches are a pure function of (store, sampler settings, seed, epoch, rank, world size), see
:mod:`.samplers`; the DALI loader (:mod:`.loader_dali`) yields the same ones. Each batch is
gathered by one numba call straight from the memory-mapped store into the output tensors
(in shared memory when built in a worker process, so handing it to the main process copies
nothing).
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import CancelledError

import numpy as np
import torch

from .collate import Collator, to_torch
from .samplers import build_sampler

__all__ = ["TorchLoader", "make_loader", "build_sampler"]


def _shared_empty(shape, dtype) -> torch.Tensor:
    """An uninitialised tensor whose storage is already in shared memory (no copy when sent)."""
    n = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(n, device="cpu")
    return torch.empty(0, dtype=dtype).new(storage).view(*shape) if n else torch.empty(shape, dtype=dtype)


def _worker_init(_):
    from . import _kernels

    _kernels.serial_only()  # the workers are the parallelism
    torch.set_num_threads(1)


class _PlanDataset(torch.utils.data.Dataset):
    """Map-style dataset whose item (epoch, k) is batch k of that epoch's plan (built lazily,
    so persistent workers serve every epoch)."""

    def __init__(self, collator: Collator, sampler):
        self.collator = collator
        self.sampler = sampler
        self._plan = None

    def plan(self, epoch):
        if self._plan is None or self._plan.epoch != epoch:
            self._plan = self.sampler.plan(epoch)
        return self._plan

    def __getitem__(self, key):
        epoch, k = key
        idx, st, ln = self.plan(epoch).batch(k)
        return make_batch(self.collator, idx, st, ln, shared=torch.utils.data.get_worker_info() is not None)


class _Keys(torch.utils.data.Sampler):
    """The (epoch, batch) keys still to serve in the current epoch; mutated between epochs."""

    def __init__(self):
        self.epoch, self.start, self.stop = 0, 0, 0

    def __iter__(self):
        return ((self.epoch, k) for k in range(self.start, self.stop))

    def __len__(self):
        return self.stop - self.start


class BufferPool:
    """Reuses the big pose/conf buffers of batches the consumer has dropped.

    A buffer is handed out again only when nothing outside the pool references its storage
    any more (torch storage use count), so reuse never overwrites a batch still in use; if
    every pooled buffer is busy a fresh tensor is allocated. Saves the page faults and kernel
    zeroing of a fresh ~50 MB allocation per batch.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self.buffers: list[torch.Tensor] = []
        self._lock = threading.Lock()

    @staticmethod
    def _free(t: torch.Tensor) -> bool:
        # 1 for the pool's tensor + 1 for the temporary storage object of the query
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata) <= 2

    def get(self, shape, dtype) -> torch.Tensor:
        n = int(np.prod(shape))
        with self._lock:
            for k, buf in enumerate(self.buffers):
                if buf.dtype == dtype and self._free(buf):
                    if buf.numel() < n:
                        buf = torch.empty(n, dtype=dtype)
                        self.buffers[k] = buf
                    return buf[:n].view(shape)
            buf = torch.empty(n, dtype=dtype)
            if len(self.buffers) < self.size:
                self.buffers.append(buf)
            return buf.view(shape)


def _pinned_empty(shape, dtype) -> torch.Tensor:
    """Page-locked memory from torch's caching host allocator. The collator writes the batch
    there directly (pinning afterwards copied ~64 MB per B=256 batch on the host), and the
    allocator hands a block out again only after the asynchronous copies reading it are done
    (it records them on their stream), which a recycling pool could not know. It keeps freed
    blocks (sizes rounded up to powers of two): a rank holds the pinned memory of the batches
    in flight and prefetched, up to about 1 GB at B=256, T=128 with two loader threads."""
    return torch.empty(shape, dtype=dtype, pin_memory=True)


def make_batch(collator: Collator, idx, st, ln, *, shared: bool = False, pool: BufferPool | None = None,
               pin: bool = False) -> dict:
    """Collate one planned batch into torch tensors. pose/conf are allocated in shared memory
    if ``shared`` (worker processes), else in pinned memory if ``pin`` (for a GPU), else from
    ``pool`` when given."""
    if not shared and pool is None and not pin:
        return to_torch(collator(idx, st, ln))
    alloc = _shared_empty if shared else _pinned_empty if pin else pool.get
    J = 123
    C = collator.channels
    if collator.packed:
        total = int(np.sum(ln))
        out = {"pose": alloc((total, J, C), torch.float32), "conf": alloc((total, J), torch.float32)}
    else:
        T = int(np.max(ln)) if len(ln) else 0
        if collator.pad_to > 1:
            T = -(-T // collator.pad_to) * collator.pad_to
        out = {"pose": alloc((len(idx), T, J, C), torch.float32), "conf": alloc((len(idx), T, J), torch.float32)}
    np_out = {k: v.numpy() for k, v in out.items()}
    b = collator(idx, st, ln, out=np_out)
    del np_out
    tb = to_torch(b)
    tb.update(out)
    return tb


class TorchLoader:
    """Resumable batch loader on ``torch.utils.data.DataLoader`` (see the module docstring).

    Args:
        source: a :class:`~slpfast.data.Store` or ``ConcatStore``.
        split / indices / mixture: which clips (default all). A mixture's draws depend on its
            own seed and on ``seed``; ``shuffle=False`` is refused with one (no fixed order).
        batch_size or max_tokens: fixed batches or a token budget (frames per batch;
            padded cost unless ``packed``).
        packed: packed pose form (``cu_seqlens``) instead of padded.
        shuffle, seed, drop_last, max_frames, crop, max_batch_size, bucket_size: sampler settings.
        rank, world_size: default from torch.distributed (each rank a disjoint part, same steps).
        channels, tokenizer, max_text_len, text_features, pad_to: see :class:`~slpfast.data.collate.Collator`.
        num_workers: 0: build each batch when asked, in this process, with multi-threaded numba
            kernels. N > 0: N workers build batches ahead (``prefetch_factor`` per worker):
        workers: "thread" (default): worker threads of this process (the numba kernels release
            the GIL, buffers are recycled, nothing is copied between processes); "process":
            a plain ``torch.utils.data.DataLoader`` with N worker processes (batches travel in
            shared memory; on 2 cores this is ~10x slower for big batches: every batch is a
            fresh shared-memory allocation).
        device: move batches to this device (pinned + non_blocking for CUDA).
        reuse_buffers: (num_workers=0) recycle the pose/conf buffers of batches the caller has
            dropped (see :class:`BufferPool`; never touches a batch still referenced).
    """

    def __init__(self, source, *, split=None, indices=None, mixture=None, batch_size=None, max_tokens=None,
                 packed=False, shuffle=True, seed=0, drop_last=False, rank=None, world_size=None, max_frames=None,
                 crop="random", max_batch_size=None, bucket_size=4096, channels=3, tokenizer=None,
                 max_text_len=None, text_features="auto", pad_to=1, num_workers=0, prefetch_factor=2,
                 device=None, pin_memory=None, multiprocessing_context=None, reuse_buffers=True,
                 workers="thread"):
        self.source = source
        self.sampler = build_sampler(source, split=split, indices=indices, mixture=mixture, batch_size=batch_size,
                                     max_tokens=max_tokens, packed=packed, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last, rank=rank, world_size=world_size, max_frames=max_frames,
                                     crop=crop, max_batch_size=max_batch_size, bucket_size=bucket_size)
        self.collator = Collator(source, packed=packed, channels=channels, tokenizer=tokenizer,
                                 max_text_len=max_text_len, text_features=text_features, pad_to=pad_to)
        self.num_workers = int(num_workers)
        self.prefetch_factor = prefetch_factor
        self.device = torch.device(device) if device is not None else None
        cuda = self.device is not None and self.device.type == "cuda"
        self.pin_memory = cuda if pin_memory is None else pin_memory
        self.multiprocessing_context = multiprocessing_context
        self.epoch = 0
        self.step = 0
        self._plan_cache = None
        self._dl = None
        self._keys = _Keys()
        if workers not in ("thread", "process"):
            raise ValueError(f"workers must be 'thread' or 'process', got {workers!r}")
        self.workers = workers
        self._pool = BufferPool(size=4 + 2 * self.num_workers * prefetch_factor) if reuse_buffers else None
        self._executor = None

    # ------------------------------------------------------------------ state
    def plan(self, epoch: int | None = None):
        e = self.epoch if epoch is None else epoch
        if self._plan_cache is None or self._plan_cache.epoch != e:
            self._plan_cache = self.sampler.plan(e)
        return self._plan_cache

    def __len__(self) -> int:
        """Batches in the current epoch (from its start)."""
        return len(self.plan())

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = int(epoch), 0

    def state_dict(self) -> dict:
        return self.sampler.loader_state(self.epoch, self.step)

    def load_state_dict(self, state: dict) -> None:
        from .samplers import check_loader_state

        check_loader_state(state, self.sampler)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    # ------------------------------------------------------------------ iteration
    def _dataloader(self):
        if self._dl is None:
            from . import _kernels

            ctx = self.multiprocessing_context
            if ctx is None:
                # fork is fastest, but not after numba's OpenMP pool started in this process
                ctx = "spawn" if (os.name != "posix" or _kernels.parallel_started()) else "fork"
            self._dl = torch.utils.data.DataLoader(
                _PlanDataset(self.collator, self.sampler), batch_size=None, sampler=self._keys,
                num_workers=self.num_workers, prefetch_factor=self.prefetch_factor, worker_init_fn=_worker_init,
                pin_memory=self.pin_memory, multiprocessing_context=ctx, persistent_workers=True)
        return self._dl

    def _threaded(self, plan, start):
        """Batches built by ``num_workers`` threads (numba kernels release the GIL), in order,
        at most ``num_workers * prefetch_factor`` ahead."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            from . import _kernels

            self._executor = ThreadPoolExecutor(self.num_workers, thread_name_prefix="slpfast-data",
                                                initializer=_kernels.thread_serial)
        ex = self._executor  # close() drops it (and a later iteration makes another): this iterator is done then
        window = max(1, self.num_workers * self.prefetch_factor)
        pending: deque = deque()
        k = start

        def closed():
            return RuntimeError("TorchLoader: iterator used after the loader was closed (close() stopped its "
                                "worker threads); start a new iteration with iter(loader)")

        try:
            while k < len(plan) or pending:
                if self._executor is not ex:
                    raise closed()
                while k < len(plan) and len(pending) < window:
                    pending.append(ex.submit(make_batch, self.collator, *plan.batch(k), pool=self._pool,
                                             pin=self.pin_memory))
                    k += 1
                try:
                    b = pending.popleft().result()
                except CancelledError:  # close() cancelled the batches not yet started
                    raise closed() from None
                yield b
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        """Stop the worker processes / threads (they are persistent across epochs)."""
        self._dl = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _finish(self, b: dict) -> dict:
        if self.device is None:
            return b
        nb = self.device.type == "cuda"
        return {k: (v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}

    def __iter__(self):
        plan = self.plan()
        start = self.step
        # A finished epoch (state saved after its last batch): move on. Not an empty epoch at its
        # step 0: it is run (no batches) and counted once, at the end, like any other epoch.
        if start >= len(plan) and start > 0:
            self.epoch, self.step = self.epoch + 1, 0
            plan, start = self.plan(), 0
        if self.num_workers == 0 or self.workers == "thread":
            if self.num_workers == 0:
                it = (make_batch(self.collator, *plan.batch(k), pool=self._pool, pin=self.pin_memory)
                      for k in range(start, len(plan)))
            else:
                it = self._threaded(plan, start)
            if self.pin_memory:  # pose/conf were collated into pinned memory; the small rest is pinned here
                it = ({k: (v.pin_memory() if isinstance(v, torch.Tensor) and not v.is_pinned() else v)
                       for k, v in b.items()} for b in it)
        else:
            self._keys.epoch, self._keys.start, self._keys.stop = self.epoch, start, len(plan)
            it = iter(self._dataloader())
        for b in it:
            self.step += 1
            yield self._finish(b)
        self.epoch, self.step = self.epoch + 1, 0


def make_loader(source, *, backend: str = "auto", **kw):
    """A loader by backend: "torch", "dali", or "auto" (DALI when it imports and CUDA is
    available, where its GPU transfer pays off; the torch loader otherwise). Both take the
    same arguments and yield the same batches."""
    if backend not in ("auto", "torch", "dali"):
        raise ValueError(f"backend must be auto/torch/dali, got {backend!r}")
    if backend in ("dali", "auto"):
        from .loader_dali import DaliLoader, dali_available

        if backend == "dali" or (dali_available() and torch.cuda.is_available()):
            if not dali_available():
                raise RuntimeError("backend='dali' but nvidia.dali does not import")
            return DaliLoader(source, **kw)
    torch_kw = {k: v for k, v in kw.items() if k not in ("py_num_workers", "prefetch_queue_depth", "num_threads",
                                                          "py_start_method")}
    return TorchLoader(source, **torch_kw)
