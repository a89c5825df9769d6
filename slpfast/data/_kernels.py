"""numba kernels of the data path: float16 decoding + gather into padded / packed batches.

Clips are stored as float16 ``(frames, J, 4)`` rows ``[x, y, z, conf]`` (see :mod:`.store`).
The gather kernels read a batch of clips straight from the memory-mapped shards and write
float32 pose and confidence, in parallel over clips (``numba.prange``).

float16 -> float32 uses the exponent-rebias trick: the bits ``sign<<16 | (h & 0x7fff)<<13``
read as float32 and multiplied by 2**112 give the exact value for zeros, subnormals and normal
numbers (the store never holds inf/NaN: the writer sanitises them). numpy's own float16 cast
is ~20x slower than this.
"""
from __future__ import annotations

import os
import types

import numba
import numpy as np
from numba import njit, prange

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


def _gather_padded(shards, shard_id, start, length, C, pose_bits, pose_f, conf_bits, conf_f):
    """Fill a padded batch.

    shards: typed List of uint16 arrays (frames, J*4) (one per shard).
    shard_id, start, length: (B,) clip b is frames [start, start+length) of shards[shard_id].
    pose_bits/pose_f: the same (B, Tmax*J*C) buffer viewed as uint32 / float32.
    conf_bits/conf_f: the same (B, Tmax*J) buffer viewed as uint32 / float32.
    Frames past ``length`` are zero.
    """
    B = shard_id.shape[0]
    for b in prange(B):
        src = shards[shard_id[b]]
        J = src.shape[1] // 4
        s = start[b]
        L = length[b]
        pb = pose_bits[b]
        cb = conf_bits[b]
        for t in range(L):
            row = src[s + t]
            po = t * J * C
            co = t * J
            for j in range(J):
                for c in range(C):
                    h = np.uint32(row[j * 4 + c])
                    pb[po + j * C + c] = ((h & 0x8000) << 16) | ((h & 0x7FFF) << 13)
                h = np.uint32(row[j * 4 + 3])
                cb[co + j] = ((h & 0x8000) << 16) | ((h & 0x7FFF) << 13)
        npose = L * J * C
        pf = pose_f[b]
        for k in range(npose):
            pf[k] *= _REBIAS
        for k in range(npose, pf.shape[0]):
            pf[k] = 0.0
        nconf = L * J
        cf = conf_f[b]
        for k in range(nconf):
            cf[k] *= _REBIAS
        for k in range(nconf, cf.shape[0]):
            cf[k] = 0.0


def _gather_packed(shards, shard_id, start, length, cu, C, pose_bits, pose_f, conf_bits, conf_f):
    """Fill a packed batch: clip b goes to rows [cu[b], cu[b+1]) of (sum T, J*C) / (sum T, J)."""
    B = shard_id.shape[0]
    for b in prange(B):
        src = shards[shard_id[b]]
        J = src.shape[1] // 4
        s = start[b]
        L = length[b]
        r0 = cu[b]
        for t in range(L):
            row = src[s + t]
            pb = pose_bits[r0 + t]
            cb = conf_bits[r0 + t]
            for j in range(J):
                for c in range(C):
                    h = np.uint32(row[j * 4 + c])
                    pb[j * C + c] = ((h & 0x8000) << 16) | ((h & 0x7FFF) << 13)
                h = np.uint32(row[j * 4 + 3])
                cb[j] = ((h & 0x8000) << 16) | ((h & 0x7FFF) << 13)
            pf = pose_f[r0 + t]
            for k in range(J * C):
                pf[k] *= _REBIAS
            cf = conf_f[r0 + t]
            for k in range(J):
                cf[k] *= _REBIAS


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


def _use_parallel(B: int) -> bool:
    global _parallel_started
    if USE_PARALLEL and B > 1:
        _parallel_started = True
        return True
    return False


def gather_padded(shards, shard_id, start, length, C, pose_bits, pose_f, conf_bits, conf_f):
    fn = _padded_par if _use_parallel(shard_id.shape[0]) else _padded_ser
    fn(shards, shard_id, start, length, C, pose_bits, pose_f, conf_bits, conf_f)


def gather_packed(shards, shard_id, start, length, cu, C, pose_bits, pose_f, conf_bits, conf_f):
    fn = _packed_par if _use_parallel(shard_id.shape[0]) else _packed_ser
    fn(shards, shard_id, start, length, cu, C, pose_bits, pose_f, conf_bits, conf_f)
