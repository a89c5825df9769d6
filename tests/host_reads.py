"""Count the tensor reads that would be device->host syncs on a GPU, on any device.

A CUDA training step that reads a device tensor on the host (``.item()``, ``int(t)``,
``bool(t)``, ``.tolist()``, ``nonzero``, boolean-mask indexing, ``repeat_interleave`` without
``output_size`` ...), or builds one from host data in a blocking copy (``torch.tensor(x,
device=...)``: torch synchronizes the stream after the copy), waits for every kernel queued
before it: the GPU's work queue drains and
the host must then launch the next kernels onto an idle GPU. ``torch.cuda.set_sync_debug_mode``
finds those only on a GPU; :class:`HostReads` finds the same calls on the CPU, so tests can
bound them where no GPU exists.

    with HostReads(exempt=[batch["lengths"]]) as reads:
        loss = model(**inputs)["loss"]
        loss.backward()
    assert reads.count == 0, reads.report()

Every tensor read counts except those in ``exempt`` (and views of them): data that lives on the
host in a GPU run too, e.g. a loader's batch before it is moved to the device.
"""
from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode

#: methods / functions whose result needs the tensor's values on the host
_READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "nonzero", "masked_select",
          "unique", "unique_consecutive", "bincount", "argwhere"}
_INDEXING = {"__getitem__", "__setitem__"}


def _storage_ptr(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return -1


def _bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostReads(TorchFunctionMode):
    """Records each host read of a tensor (see the module docstring) with its call site."""

    def __init__(self, exempt=()):
        super().__init__()
        self._exempt = {_storage_ptr(t) for t in exempt if isinstance(t, torch.Tensor)}
        self.sites: list[str] = []  # "what at module:line (function)", one per read
        self.functions: list[str] = []  # "module:function" of each read

    def exempt(self, *tensors: torch.Tensor) -> None:
        """Exempt more host-side tensors (e.g. ones a step creates from host metadata)."""
        self._exempt.update(_storage_ptr(t) for t in tensors if isinstance(t, torch.Tensor))

    @property
    def count(self) -> int:
        return len(self.sites)

    def _record(self, what: str) -> None:
        """Records a read made by the project's own code (the frame that called torch). Reads
        inside torch itself are skipped: its CPU code paths differ from its CUDA ones (e.g. the
        unfused CPU AdamW reads its step counters; the fused CUDA one does not)."""
        caller = traceback.extract_stack()[-3]
        path = caller.filename.replace("\\", "/")
        if "/slpfast/" not in path and "/kernels/" not in path:
            return
        module = f"{path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]}"
        self.functions.append(f"{module}:{caller.name}")
        self.sites.append(f"{what} at {module}:{caller.lineno} ({caller.name})")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and _storage_ptr(first) not in self._exempt:
            if name in _READS:
                self._record(name)
            elif name in _INDEXING and len(args) > 1 and _bool_index(args[1]):
                self._record(f"{name} with a bool mask")
            elif name == "repeat_interleave" and kwargs.get("output_size") is None and (
                    isinstance(kwargs.get("repeats"), torch.Tensor) or first.dtype != torch.bool and len(args) == 1
                    or len(args) > 1 and isinstance(args[1], torch.Tensor)):
                self._record("repeat_interleave without output_size")
            elif name in ("to", "cpu") and func is not None and _to_host(args, kwargs, name):
                self._record("copy to the host")
        elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
            # host data to the run's device (the CPU here, a GPU there): on a GPU a blocking copy,
            # after which torch synchronizes the stream
            self._record(f"torch.{name} on a device (blocking host-to-device copy)")
        return func(*args, **kwargs)

    def report(self) -> str:
        counts: dict[str, int] = {}
        for s in self.sites:
            counts[s] = counts.get(s, 0) + 1
        return "\n".join(f"{n} x {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _to_host(args, kwargs, name: str) -> bool:
    """``t.cpu()`` / ``t.to("cpu")``: a copy to the host (a no-op on a CPU run, a sync on a GPU).
    Only the literal string ``"cpu"`` counts: ``t.to(device)`` with the run's device (a
    torch.device, which is the CPU in a CPU run) is a move to the training device."""
    if name == "cpu":
        return True
    dev = kwargs.get("device")
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            dev = a
    return isinstance(dev, str) and dev.startswith("cpu")
