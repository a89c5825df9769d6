"""The files of a conversion (:mod:`slpfast.data.convert`): its inputs and its output folder.

- inputs: :func:`find_inputs` (files under the SRC folders and their clip ids), the check that
  no two inputs share an id, and the per-file fingerprints that tell a resume whether an input
  changed since it was converted;
- the output folder: which files a conversion writes there (what ``--overwrite`` removes) and
  which it does not (an ``--out`` holding those is someone else's folder).
"""
from __future__ import annotations

import hashlib
import os
import re
import time

from .readers import EXTENSIONS

# An input whose mtime is this close to the moment it was read may be rewritten within the same
# timestamp tick (2 s on FAT, 1 s on HFS+, a jiffy on ext4) without its mtime changing: its content
# hash is recorded too (see :mod:`slpfast.data.convert`'s docstring).
RACY_NS = 2_000_000_000
# Files a conversion writes into --out (besides chunks/): what --overwrite removes, and what must
# not be trusted without a state file.
SHARD_RE = re.compile(r"shard-\d{5,}\.slp$")
# Cached text features (written into the store by pre-training): they describe the clips of the
# shards they were computed for, so they go with those shards.
TEXTFEAT_RE = re.compile(r"textfeat-.+\.slp$")
STORE_FILES = ("store.json", "convert_report.json")
STATE_FILE = "convert_state.json"  # the conversion's fingerprint (see slpfast.data.convert)
CHUNK_REPORT_RE = re.compile(r"chunk-\d{5,}\.json$")  # chunks/chunk-<k>.json


def find_inputs(sources: list[str], exclude: str | None = None) -> list[tuple[str, str]]:
    """(path, clip id) for every input file; the id is the path relative to its SRC root
    without extension (a file given directly: its stem). Symlinked folders are searched, each
    real folder once. Folders are not searched inside ``exclude`` (the output store, whose JSON reports would otherwise read as inputs when
    ``--out`` lies inside a SRC folder)."""
    skip = os.path.realpath(exclude) if exclude else None
    out = []
    # Linked folders are followed (a SRC often gathers corpora by symlinks), each real folder once
    # across all the SRCs: a link loop ends, one folder linked twice is not two corpora, and a link
    # inside one SRC to another SRC does not give that SRC's files a second id.
    seen = {os.path.realpath(src) for src in sources if os.path.isdir(src)}
    for src in sources:
        if os.path.isdir(src):
            for root, dirs, files in os.walk(src, followlinks=True):
                keep = []
                # a real folder before a link to it beside it: its files keep their own ids
                for x in sorted(dirs, key=lambda x: (os.path.islink(os.path.join(root, x)), x)):
                    real = os.path.realpath(os.path.join(root, x))
                    if real != skip and real not in seen:
                        seen.add(real)
                        keep.append(x)
                dirs[:] = sorted(keep)
                if skip is not None and os.path.realpath(root) == skip:
                    continue
                for f in files:
                    if f.lower().endswith(EXTENSIONS):
                        p = os.path.join(root, f)
                        out.append((p, os.path.splitext(os.path.relpath(p, src))[0].replace(os.sep, "/")))
        elif os.path.exists(src):
            out.append((src, os.path.splitext(os.path.basename(src))[0]))
        else:
            raise FileNotFoundError(src)
    out.sort(key=lambda x: (x[1], x[0]))
    return out


def check_unique_ids(items: list[tuple[str, str]]) -> None:
    """Two inputs with one clip id (``a.pose`` beside ``a.json``, or the same relative path under
    two SRC folders) would both take that id's manifest row: one text twice in a batch (a
    false negative for the contrastive loss) and possibly one clip in two splits. Refuse."""
    by_id: dict[str, list[str]] = {}
    for path, clip_id in items:
        by_id.setdefault(clip_id, []).append(path)
    dups = {k: v for k, v in by_id.items() if len(v) > 1}
    if dups:
        k, paths = next(iter(sorted(dups.items())))
        raise ValueError(f"SRC: {len(dups)} clip id(s) come from more than one input file, e.g. {k!r} from "
                         f"{', '.join(paths[:3])}; keep one file per clip, or convert the SRC folders into "
                         f"separate stores (pre-training can mix them: --data.store=A,B)")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_fingerprint(path: str) -> list | None:
    """``[size, mtime_ns]`` of an input file, plus its content's SHA-256 when its mtime is too
    recent to tell a later same-tick rewrite apart (see ``RACY_NS``); None if it cannot be
    stat'ed (it is then skipped as unreadable, and a resume redoes the chunk once it exists)."""
    now = time.time_ns()
    try:
        st = os.stat(path)
    except OSError:
        return None
    fp = [st.st_size, st.st_mtime_ns]
    if st.st_mtime_ns > now - RACY_NS:
        try:
            fp.append(file_sha256(path))
        except OSError:
            return None
    return fp


def input_unchanged(path: str, recorded) -> bool:
    """Whether ``path`` is still the file that ``recorded`` (an :func:`input_fingerprint`) saw."""
    try:
        st = os.stat(path)
    except OSError:
        return recorded is None  # still unreadable (e.g. a dangling link): it was skipped, and still would be
    if not (isinstance(recorded, list) and len(recorded) in (2, 3)):
        return False
    try:
        if [st.st_size, st.st_mtime_ns] != recorded[:2]:
            return False
        return len(recorded) == 2 or file_sha256(path) == recorded[2]
    except OSError:
        return False


def conversion_files(out_dir: str) -> list[str]:
    """The files of a conversion in ``out_dir`` (chunk reports, shards, ``store.json``, the
    report): what ``--overwrite`` removes. Other files are left alone."""
    found = []
    chunks = os.path.join(out_dir, "chunks")
    if os.path.isdir(chunks):
        found += [os.path.join(chunks, f) for f in sorted(os.listdir(chunks))]
    if os.path.isdir(out_dir):
        found += [os.path.join(out_dir, f) for f in sorted(os.listdir(out_dir))
                  if SHARD_RE.match(f) or TEXTFEAT_RE.match(f) or f in STORE_FILES]
    return found


def foreign_files(out_dir: str) -> list[str]:
    """Entries of ``out_dir`` that no conversion writes (anything but its files, their temp
    files, and ``chunks/`` with chunk reports): an --out holding them is someone else's folder."""
    try:
        names = sorted(os.listdir(out_dir))
    except OSError:
        return []
    ours = (SHARD_RE, TEXTFEAT_RE, re.compile("|".join(re.escape(f) + "$" for f in (*STORE_FILES, STATE_FILE))))

    def written_here(name: str, patterns) -> bool:  # a file of ours, or the temp file of one
        return any(p.match(name.split(".tmp-", 1)[0]) for p in patterns)

    foreign = [n for n in names if n != "chunks" and not written_here(n, ours)]
    chunks = os.path.join(out_dir, "chunks")
    if "chunks" in names and not os.path.isdir(chunks):
        foreign.append("chunks")
    elif "chunks" in names:
        foreign += [f"chunks/{n}" for n in sorted(os.listdir(chunks))
                    if not written_here(n, (CHUNK_REPORT_RE,))]
    return foreign
