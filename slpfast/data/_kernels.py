"""numba kernels of the data path: float16 decoding + gather into padded / packed batches.

Clips are stored as float16 pose ``(frames, J, 3)`` and confidence ``(frames, J)`` sections
(see :mod:`.store`), so a clip (or a crop of it) is one contiguous run in each: the gather
kernels stream them straight from the memory-mapped shards into float32 pose and confidence,
in parallel over clips (``numba.prange``).

float16 -> float32 uses the exponent-rebias trick: the bits ``sign<<16 | (h & 0x7fff)<<13``
reinterpreted as float32 (an LLVM bitcast) and multiplied by 2**112 give the exact value for zeros, subnormals and normal
numbers (the store never holds inf/NaN: the writer sanitises them). numpy's own float16 cast
is ~20x slower than this.
"""
from __future__ import annotations

import os
import threading
import types

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba import types as nbtypes
from numba.extending import intrinsic

# numba's default threading layer here is GNU OpenMP, which aborts a process that forks after
# using it (DataLoader workers, DALI workers). The workqueue layer is fork-safe; it must not be
# entered from two Python threads at once, which the loaders never do. An explicit
# NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_REBIAS = np.float32(2.0 ** 112)

#: Use the multi-threaded kernels (numba prange). Worker processes (DataLoader / DALI workers)
#: switch this off: they are the parallelism, and numba's GNU-OpenMP layer must not be
#: started in a process that will fork later.
USE_PARALLEL = True
_parallel_started = False


def parallel_started() -> bool:
    """True once a multi-threaded kernel ran in this process (then forking is unsafe with
    numba's OpenMP threading layer: loaders start workers with 'spawn' instead)."""
    if not _parallel_started:
        return False
    try:
        import numba

        return numba.threading_layer() == "omp"
    except Exception:
        return True


def serial_only() -> None:
    global USE_PARALLEL
    USE_PARALLEL = False


@njit(inline="always")
def _bits(h):
    h = np.uint32(h)
    return ((h & np.uint32(0x8000)) << np.uint32(16)) | ((h & np.uint32(0x7FFF)) << np.uint32(13))


@intrinsic
def _as_f32(typingctx, x):
    """Reinterpret uint32 bits as float32 (an LLVM bitcast: free, vectorises)."""
    sig = nbtypes.float32(nbtypes.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(inline="always")
def _convert(src, bits, out):
    """float16 bits -> float32, elementwise over equally long 1-D slices, in one pass.
    A plain zero-based loop over slices, so LLVM vectorises it (``bits`` is unused, kept
    for the signature)."""
    for k in range(src.shape[0]):
        out[k] = _as_f32(_bits(src[k])) * _REBIAS


@njit(inline="always")
def _convert_strided(src, C, bits, out):
    """(rows*3,) float16 bits -> (rows*C,) float32 keeping the first C of every 3 values."""
    rows = src.shape[0] // 3
    for r in range(rows):
        for c in range(C):
            out[r * C + c] = _as_f32(_bits(src[r * 3 + c])) * _REBIAS


@njit(inline="always")
def _zero(out):
    for k in range(out.shape[0]):
        out[k] = 0.0


def _gather_padded(pose_list, conf_list, J, shard_id, start, length, C, pose_bits, pose_f, conf_bits, conf_f):
    """Fill a padded batch.

    pose_list / conf_list: typed Lists (one per shard) of the flat uint16 (float16 bits)
        pose (frames*J*3,) and confidence (frames*J,) sections.
    shard_id, start, length: (B,) clip b is frames [start, start+length) of its shard.
    pose_bits/pose_f: the same (B, Tmax*J*C) buffer viewed as uint32 / float32.
    conf_bits/conf_f: the same (B, Tmax*J) buffer viewed as uint32 / float32.
    Frames past ``length`` are zero.
    """
    B = shard_id.shape[0]
    for b in prange(B):
        s = start[b]
        L = length[b]
        sp = pose_list[shard_id[b]][s * J * 3:(s + L) * J * 3]
        n = L * J * C
        if C == 3:
            _convert(sp, pose_bits[b][:n], pose_f[b][:n])
        else:
            _convert_strided(sp, C, pose_bits[b][:n], pose_f[b][:n])
        _zero(pose_f[b][n:])
        sc = conf_list[shard_id[b]][s * J:(s + L) * J]
        _convert(sc, conf_bits[b][:L * J], conf_f[b][:L * J])
        _zero(conf_f[b][L * J:])


def _gather_packed(pose_list, conf_list, J, shard_id, start, length, cu, C, pose_bits, pose_f, conf_bits, conf_f):
    """Fill a packed batch: clip b goes to rows [cu[b], cu[b+1]); pose_bits/pose_f are the flat
    (sum T * J * C,) buffer, conf_bits/conf_f the flat (sum T * J,) one."""
    B = shard_id.shape[0]
    for b in prange(B):
        s = start[b]
        L = length[b]
        sp = pose_list[shard_id[b]][s * J * 3:(s + L) * J * 3]
        d0 = cu[b] * J * C
        d1 = d0 + L * J * C
        if C == 3:
            _convert(sp, pose_bits[d0:d1], pose_f[d0:d1])
        else:
            _convert_strided(sp, C, pose_bits[d0:d1], pose_f[d0:d1])
        sc = conf_list[shard_id[b]][s * J:(s + L) * J]
        _convert(sc, conf_bits[cu[b] * J:(cu[b] + L) * J], conf_f[cu[b] * J:(cu[b] + L) * J])


def _clone(fn, suffix):
    """A copy of ``fn`` under another qualname, so numba's on-disk cache keeps the serial and
    the parallel compilations apart."""
    g = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    g.__qualname__ = fn.__qualname__ + suffix
    return g


_padded_par = njit(parallel=True, cache=True, nogil=True)(_clone(_gather_padded, "_par"))
_padded_ser = njit(parallel=False, cache=True, nogil=True)(_clone(_gather_padded, "_ser"))
_packed_par = njit(parallel=True, cache=True, nogil=True)(_clone(_gather_packed, "_par"))
_packed_ser = njit(parallel=False, cache=True, nogil=True)(_clone(_gather_packed, "_ser"))


_thread = threading.local()


def thread_serial() -> None:
    """Use the single-threaded kernels in the calling thread (loader prefetch threads: the
    threads are the parallelism)."""
    _thread.serial = True


def _use_parallel(B: int) -> bool:
    global _parallel_started
    if USE_PARALLEL and B > 1 and not getattr(_thread, "serial", False):
        _parallel_started = True
        return True
    return False


#: Serialises the multi-threaded kernels: the workqueue layer must not be entered from two
#: Python threads at once (e.g. a prefetch thread and the main thread).
_PAR_LOCK = threading.Lock()
#: Clips per work item of the multi-threaded kernels: small chunks are handed out dynamically,
#: so one descheduled thread (a busy machine) does not hold the whole batch back.
_CHUNK = 8


def gather_padded(pose_list, conf_list, J, shard_id, start, length, C, pose_bits, pose_f, conf_bits, conf_f):
    args = (pose_list, conf_list, J, shard_id, start, length, C, pose_bits, pose_f, conf_bits, conf_f)
    if _use_parallel(shard_id.shape[0]):
        with _PAR_LOCK, numba.parallel_chunksize(_CHUNK):
            _padded_par(*args)
    else:
        _padded_ser(*args)


def gather_packed(pose_list, conf_list, J, shard_id, start, length, cu, C, pose_bits, pose_f, conf_bits, conf_f):
    args = (pose_list, conf_list, J, shard_id, start, length, cu, C, pose_bits, pose_f, conf_bits, conf_f)
    if _use_parallel(shard_id.shape[0]):
        with _PAR_LOCK, numba.parallel_chunksize(_CHUNK):
            _packed_par(*args)
    else:
        _packed_ser(*args)


@njit(cache=True, nogil=True)
def gather_ints(blobs, shard_id, start, length, out):
    """out[b, :length[b]] = blobs[shard_id[b]][start[b]:start[b]+length[b]] (rest untouched)."""
    for b in range(shard_id.shape[0]):
        src = blobs[shard_id[b]]
        s = start[b]
        for k in range(length[b]):
            out[b, k] = src[s + k]


@njit(cache=True, nogil=True)
def gather_padded_half(pose_list, conf_list, J, shard_id, start, length, pose_out, conf_out):
    """Padded batch of raw float16 bits (no conversion): pose_out (B, Tmax*J*3) and conf_out
    (B, Tmax*J) uint16, zero past each clip's length. Used by the DALI source (the cast to
    float32 then runs in DALI, on the GPU when there is one)."""
    for b in range(shard_id.shape[0]):
        s = start[b]
        L = length[b]
        sp = pose_list[shard_id[b]][s * J * 3:(s + L) * J * 3]
        po = pose_out[b]
        for k in range(sp.shape[0]):
            po[k] = sp[k]
        for k in range(sp.shape[0], po.shape[0]):
            po[k] = 0
        sc = conf_list[shard_id[b]][s * J:(s + L) * J]
        co = conf_out[b]
        for k in range(sc.shape[0]):
            co[k] = sc[k]
        for k in range(sc.shape[0], co.shape[0]):
            co[k] = 0
