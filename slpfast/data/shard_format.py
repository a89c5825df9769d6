"""On-disk shard format: one file of named, aligned numpy sections behind a validated header.

Layout of a shard file::

    offset 0   prelude (32 bytes, little endian)
               magic     8s   b"SLPFSHRD"
               version   u32  FORMAT_VERSION
               json_len  u32  length of the JSON header that follows
               file_size u64  exact size of the whole file
               json_crc  u32  CRC-32 of the JSON header bytes
               pre_crc   u32  CRC-32 of the 28 bytes before it
    offset 32  JSON header: {"kind": str, "meta": {...},
                             "sections": {name: {"offset", "nbytes", "dtype", "shape", "crc32"}}}
    data start (the first 64-byte boundary after the header): the sections, each on a 64-byte
               boundary; section offsets are relative to the data start.

Opening validates, in order: that the file is at least a prelude long, the magic, the
version, the prelude CRC, that the on-disk size equals ``file_size`` (a truncated or padded
file fails here), the header CRC, that every section lies inside the file and matches its
dtype/shape, and the CRC-32 of every section smaller than ``FAST_VERIFY_BYTES`` (all of them
with ``verify="full"``). The bulk sections (``PAYLOAD_SECTIONS``: pose, confidence, text
features) of the shards of one store open share a :class:`CrcBudget` of ``FAST_VERIFY_BYTES``
in total: a small store is checked whole on every open, a large one (a 1.5M-clip store of
256-clip shards holds ~150 GB of pose in 25 MB sections) only in its first shards, instead of
being read whole by every process that opens it. Each failure raises :class:`ShardError`
naming the file and the check.

Writes are atomic: the file is written to ``<path>.tmp-<pid>-<n>`` in the same directory,
flushed, fsynced and renamed over ``path``; a crash leaves at most a stray ``.tmp-`` file
(ignored by readers and removed by the next writer of that path).
"""
from __future__ import annotations

import errno
import itertools
import json
import mmap
import os
import struct
import zlib
from typing import Mapping

import numpy as np

MAGIC = b"SLPFSHRD"
FORMAT_VERSION = 2  # 2: planar pose + conf sections (1: interleaved poseconf)
_PRELUDE = struct.Struct("<8sIIQI")  # 28 bytes, followed by a u32 CRC of these bytes
PRELUDE_SIZE = 32
ALIGN = 64
#: Sections up to this size are CRC-checked on every open; larger ones only with verify="full".
#: Also the total of bulk sections (``PAYLOAD_SECTIONS``) that one store open checks.
FAST_VERIFY_BYTES = 64 << 20
#: The bulk of a shard (per frame or per token, not per clip): with a :class:`CrcBudget`,
#: verify="fast" checks them only while the budget lasts.
PAYLOAD_SECTIONS = frozenset({"pose", "conf", "pooled", "tokens"})

_tmp_counter = itertools.count()


class ShardError(RuntimeError):
    """A shard (or store) file is missing, truncated, corrupt or of an unknown version."""


class CrcBudget:
    """Bytes of bulk sections that verify="fast" may still CRC-check, shared by the shards of
    one store open (default ``FAST_VERIFY_BYTES``, read when it is made)."""

    def __init__(self, nbytes: int | None = None):
        self.left = int(FAST_VERIFY_BYTES if nbytes is None else nbytes)

    def take(self, nbytes: int) -> bool:
        """Whether a section of ``nbytes`` still fits (and if so, spend it)."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


def _open_fd_count() -> int | None:
    """Descriptors this process has open (None where the system does not list them)."""
    for folder in ("/proc/self/fd", "/dev/fd"):  # Linux; macOS and the BSDs
        try:
            return len(os.listdir(folder))
        except OSError:
            pass
    return None


def reserve_open_files(n: int, what: str) -> None:
    """Make room for ``n`` more open shards in this process, raising the soft limit on open
    files (up to the hard one) when it is short.

    Each :class:`ShardFile` keeps its memory map, and a memory map keeps a descriptor of its
    file: a 1.5M-clip store converted at 256 clips per shard has ~5,900 clip shards (twice that
    with cached text features), against a soft limit of 1,024 on many systems, in every process
    that opens it (each rank, each loader worker). Raises :class:`ShardError` naming the fix
    when even the hard limit is too low. Best effort where the limit cannot be read or set.
    """
    try:
        import resource
    except ImportError:  # not POSIX: nothing to adjust
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    in_use = _open_fd_count()
    # what is open, the shards, and room for everything else; where nothing tells what is open,
    # the limit is raised by what the shards need, and never refused (the open says if it fails)
    need = (soft if in_use is None else in_use) + n + 256
    if need <= soft:
        return
    if in_use is not None and hard != resource.RLIM_INFINITY and need > hard:
        raise ShardError(f"{what}: opening {n} shard files needs about {need} open files, more than this process "
                         f"may have (ulimit -n: soft {soft}, hard {hard}); raise the hard limit, or make fewer, "
                         f"larger shards (python -m slpfast.data.convert --chunk)")
    target = need if in_use is None else need + 1024
    if hard != resource.RLIM_INFINITY:
        target = min(hard, target)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), hard))
    except (ValueError, OSError):  # e.g. above a system-wide cap: the open itself will say so
        pass


def _emfile_hint(e: OSError) -> str:
    if e.errno not in (errno.EMFILE, errno.ENFILE):
        return ""
    return ": every open shard holds a file; raise ulimit -n, or make fewer, larger shards (convert --chunk)"


def _crc(buf) -> int:
    return zlib.crc32(memoryview(buf).cast("B")) & 0xFFFFFFFF


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _remove_stray_temps(path: str) -> None:
    """Delete ``<path>.tmp-<pid>-<n>`` files left by writers that were killed (their pid is gone)."""
    d, base = os.path.split(os.path.abspath(path))
    prefix = base + ".tmp-"
    try:
        names = [n for n in os.listdir(d) if n.startswith(prefix)]
    except OSError:
        return
    for n in names:
        pid = n[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that writer is still alive
        except ProcessLookupError:
            pass
        except OSError:  # e.g. alive but another user's
            continue
        try:
            os.unlink(os.path.join(d, n))
        except OSError:
            pass


def atomic_write_bytes(path: str, chunks) -> None:
    """Write an iterable of bytes-like chunks to ``path`` atomically (temp file + fsync + rename)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    _remove_stray_temps(path)
    tmp = f"{path}.tmp-{os.getpid()}-{next(_tmp_counter)}"
    try:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(d)  # make the rename durable


def fsync_dir(path: str) -> None:
    """fsync a directory, so that renames and unlinks in it survive a crash (best effort: some
    file systems cannot open or sync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, [json.dumps(obj, indent=1, sort_keys=True).encode()])


def write_shard(path: str, sections: Mapping[str, np.ndarray], *, kind: str, meta: dict | None = None) -> int:
    """Write ``sections`` (name -> array) as one shard file, atomically. Returns the file size."""
    arrays = {k: np.ascontiguousarray(v) for k, v in sections.items()}
    table: dict = {}
    off = 0  # offsets are relative to the data start (first 64-byte boundary after the header)
    for name, a in arrays.items():
        table[name] = {"offset": off, "nbytes": int(a.nbytes), "dtype": a.dtype.str,
                       "shape": list(a.shape), "crc32": _crc(a) if a.nbytes else 0}
        off = _align(off + a.nbytes)
    hdr = json.dumps({"kind": kind, "meta": meta or {}, "sections": table}, sort_keys=True).encode()
    data_start = _align(PRELUDE_SIZE + len(hdr))
    file_size = data_start + off
    pre = _PRELUDE.pack(MAGIC, FORMAT_VERSION, len(hdr), file_size, _crc(hdr))
    pre = pre + struct.pack("<I", _crc(pre))

    def chunks():
        yield pre
        yield hdr
        pos = PRELUDE_SIZE + len(hdr)
        for name, a in arrays.items():
            o = data_start + table[name]["offset"]
            yield b"\0" * (o - pos)
            yield memoryview(a).cast("B") if a.nbytes else b""
            pos = o + a.nbytes
        yield b"\0" * (file_size - pos)

    atomic_write_bytes(path, chunks())
    return file_size


class ShardFile:
    """A validated, memory-mapped shard. ``sections[name]`` are read-only numpy views."""

    def __init__(self, path: str, *, verify: str = "fast", expect_kind: str | None = None,
                 budget: CrcBudget | None = None):
        """``budget``: under verify="fast", the bulk sections (``PAYLOAD_SECTIONS``) are
        CRC-checked only while it lasts (None: like any other section, by size alone)."""
        if verify not in ("none", "fast", "full"):
            raise ValueError(f"verify must be 'none', 'fast' or 'full', got {verify!r}")
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise ShardError(f"{path}: cannot open shard ({e.strerror}){_emfile_hint(e)}") from e
        try:
            size = os.fstat(fd).st_size
            if size < PRELUDE_SIZE:
                raise ShardError(f"{path}: truncated shard: {size} bytes, smaller than the {PRELUDE_SIZE}-byte prelude")
            try:
                self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            except OSError as e:  # the map keeps a descriptor of its own: EMFILE shows up here too
                raise ShardError(f"{path}: cannot map shard ({e.strerror}){_emfile_hint(e)}") from e
        finally:
            os.close(fd)
        mm = self._mm
        magic, version, json_len, file_size, json_crc = _PRELUDE.unpack_from(mm, 0)
        (pre_crc,) = struct.unpack_from("<I", mm, _PRELUDE.size)
        if magic != MAGIC:
            raise ShardError(f"{path}: not a slpfast shard (bad magic {magic!r}, expected {MAGIC!r})")
        if version != FORMAT_VERSION:
            raise ShardError(f"{path}: unsupported shard format version {version} (this slpfast reads {FORMAT_VERSION})")
        if _crc(mm[: _PRELUDE.size]) != pre_crc:
            raise ShardError(f"{path}: corrupt shard prelude (CRC mismatch)")
        if size != file_size:
            what = "truncated" if size < file_size else "oversized"
            raise ShardError(f"{path}: {what} shard: {size} bytes on disk, header says {file_size}")
        hdr = mm[PRELUDE_SIZE: PRELUDE_SIZE + json_len]
        if _crc(hdr) != json_crc:
            raise ShardError(f"{path}: corrupt shard header (CRC mismatch)")
        try:
            header = json.loads(hdr)
        except ValueError as e:
            raise ShardError(f"{path}: unreadable shard header: {e}") from e
        self.kind = header.get("kind")
        if expect_kind is not None and self.kind != expect_kind:
            raise ShardError(f"{path}: shard kind is {self.kind!r}, expected {expect_kind!r}")
        self.meta = header.get("meta", {})
        self.sections: dict[str, np.ndarray] = {}
        data_start = _align(PRELUDE_SIZE + json_len)
        for name, s in header["sections"].items():
            dt = np.dtype(s["dtype"])
            shape = tuple(s["shape"])
            n = int(np.prod(shape)) if shape else 1
            off = data_start + int(s["offset"])
            if n * dt.itemsize != s["nbytes"] or s["offset"] < 0 or off + s["nbytes"] > size:
                raise ShardError(f"{path}: section {name!r} has inconsistent size/offset")
            a = np.frombuffer(mm, dtype=dt, count=n, offset=off).reshape(shape) if n else np.empty(shape, dt)
            if verify == "full" or (verify == "fast" and s["nbytes"] <= FAST_VERIFY_BYTES and (
                    budget is None or name not in PAYLOAD_SECTIONS or budget.take(s["nbytes"]))):
                if s["nbytes"] and _crc(a) != s["crc32"]:
                    raise ShardError(f"{path}: section {name!r} is corrupt (CRC mismatch)")
            self.sections[name] = a
        self.file_size = size

    def __getitem__(self, name: str) -> np.ndarray:
        return self.sections[name]

    def __contains__(self, name: str) -> bool:
        return name in self.sections
