"""Convert pose files into a store: ``python -m slpfast.data.convert SRC... --out DIR``.

::

    python -m slpfast.data.convert data/poses/ extra.pose --manifest texts.tsv --out stores/mine \\
        --fps 25 --max-gap 5 --workers 8

SRC are files or folders (searched recursively for .pose, .json, .npy, .npz, .pkl). Every
clip is read (:mod:`.readers`), the main signer picked, mapped to the canonical layout
(:mod:`slpfast.layouts_sources`), short gaps filled, resampled to ``--fps`` (numba,
:mod:`.preprocess`) and written with its text and metadata from the manifest
(:mod:`.manifest`).

Robustness: a clip that cannot be used is skipped and its reason counted: ``corrupt``,
``shape`` (wrong shapes / unknown layout), ``nan`` (NaN or inf in a confident point),
``empty`` (no frames or no confident point), ``missing_text`` (no manifest row or empty
text; ``--allow-missing-text`` keeps such clips with text ""). The run never stops on bad
input. The report (``convert_report.json`` in the store, also printed) has the counts and
the first few files per reason, and how many manifest rows no input file took
(``manifest_unmatched``); a manifest that no input matches at all is refused up front.

Resume: inputs are cut into chunks of ``--chunk`` files in sorted order; each chunk becomes
one shard, written atomically, followed by its chunk report. A rerun with the same inputs
skips finished chunks and redoes the rest, so an interrupted run (Ctrl-C, crash, kill) resumes
where it stopped and never leaves a half-written shard. ``store.json`` is written last (and
removed while chunks are being redone, so a crash never leaves it listing a mix of shards).
Text features that pre-training cached in the store are kept by a rerun that redoes nothing;
a redone chunk or ``--overwrite`` removes them with the listing (they describe the old clips).

What a resume trusts, and why:

* ``convert_state.json`` holds the fingerprint of the conversion: the input paths and ids, the
  options, ``--chunk`` and the manifest's *content* (it is small). A rerun whose fingerprint
  differs (a file added or removed, another option, an edited manifest) stops with exit 2 and
  asks for ``--overwrite``: its chunk boundaries or clip records would differ from the stored
  ones. Without a readable state file, shards, chunk reports or a ``store.json`` already in
  ``--out`` are never trusted either (they may come from any other conversion): refused too.
* Each chunk report records that conversion fingerprint and, per input file, the
  ``(size, mtime_ns)`` seen just before the file was read. A chunk is skipped only if its
  shard validates and every one of its inputs still has that size and mtime; a chunk whose
  inputs were replaced (e.g. pose estimation re-run, even with a same-size output) is
  converted again (counted in the report's ``changed_chunks``). Hashing the content of every
  input on every resume would read the whole corpus again (1.5M files), so, like make and
  rsync, the converter trusts size + mtime, read with one ``stat`` per file. Timestamps are
  coarse on some file systems (up to 2 s), so a file rewritten within the same tick could keep
  its mtime: for a file whose mtime was within ``RACY_NS`` of the moment it was read (as
  ``git`` does for "racily clean" files) the content's SHA-256 is recorded too and compared
  on resume. Not detected: a tool that replaces a file *and* sets its old size and mtime back
  (``touch -r``), or a clock skewed by more than 2 s on a network file system; use
  ``--overwrite`` after such changes.

Exit codes: 0 converted, 1 no clip could be converted (every file skipped: the reasons are
printed) or a write failed (e.g. a full disk: rerun to resume), 2 bad options or sources (or an
``--out`` holding another conversion or other files), 130 interrupted (rerun to resume).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter

import numpy as np

from ..layouts import PART_SLICES
from ..layouts_sources import get_layout
from .convert_files import (STATE_FILE, check_unique_ids, conversion_files, find_inputs, foreign_files,
                            input_fingerprint, input_unchanged)
from .manifest import Manifest, read_manifest
from .readers import EXTENSIONS, ReadError, read_any
from .shard_format import CrcBudget, ShardError, ShardFile, atomic_write_json
from .store_format import read_store_json, write_store_json
from .store_writer import _unlist_store, sanitize_pose, write_clip_shard

REASONS = ("corrupt", "shape", "nan", "empty", "missing_text")
_SIGNER_WEIGHT_PARTS = ("body", "left_hand", "right_hand")
class Skip(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def convert_one(path: str, clip_id: str, manifest: Manifest | None, opts: dict) -> dict:
    """Read + preprocess one clip. Returns the record for the shard, or raises Skip."""
    from . import preprocess

    row = manifest.lookup(clip_id, _stem(clip_id)) if manifest is not None else None
    text = (row or {}).get("text", "")
    if not text.strip() and not opts["allow_missing_text"]:
        raise Skip("missing_text", "no manifest row with text" if row is None else "empty text")
    try:
        raw = read_any(path, layout=opts["layout"], channels=opts["channels"])
    except ReadError as e:
        raise Skip(e.reason, str(e)) from None
    pts, conf = raw.points, raw.conf
    if pts.shape[0] == 0 or pts.shape[1] == 0:
        raise Skip("empty", "no frames" if pts.shape[0] == 0 else "no person")
    if not np.isfinite(conf).all() or not np.isfinite(pts[conf > 0]).all():
        raise Skip("nan", "NaN or inf values")
    pts = np.where(conf[..., None] > 0, pts, 0.0).astype(np.float32)  # NaN at missing points is fine
    pts = np.nan_to_num(pts, nan=0.0, posinf=0.0, neginf=0.0)
    # canonical layout first (the signer score weighs body + hands), then pick the signer
    cpts, cconf = raw.layout.to_canonical(pts, conf)  # (T, people, J, 3)
    weight = np.zeros(cpts.shape[2])
    for part in _SIGNER_WEIGHT_PARTS:
        weight[PART_SLICES[part]] = 1.0
    if cpts.shape[1] > 1:
        p, c, _ = preprocess.select_signer(cpts, cconf, weight=weight)
    else:
        p, c = cpts[:, 0], cconf[:, 0]
    if not (c > 0).any():
        raise Skip("empty", "no confident point")
    p, c = preprocess.fill_gaps(p, c, opts["max_gap"])
    # the file's own rate (readers give None unless it is a positive number), else the manifest's
    # (checked by read_manifest), else --default-fps
    fps = raw.fps or (float(row["fps"]) if row and row.get("fps") else None) or opts["default_fps"]
    if opts["fps"]:
        p, c = preprocess.resample(p, c, fps, opts["fps"])
        fps = opts["fps"]
    glosses = manifest.gloss_ids(row) if (manifest is not None and row) else []
    return {"pose": p, "conf": c, "text": text, "key": clip_id, "fps": float(fps),
            "split": (row or {}).get("split") or opts["split"], "source": (row or {}).get("source") or opts["source"],
            "language": (row or {}).get("language") or opts["language"], "signer": (row or {}).get("signer", ""),
            "label": manifest.label(row) if (manifest is not None and row) else -1, "glosses": glosses,
            "dims": raw.dims, "layout": raw.layout.name}


def _stem(clip_id: str) -> str:
    """A clip id's last component: the id a manifest row may give instead of the relative path."""
    return clip_id.rsplit("/", 1)[-1]


def _chunk_manifest(manifest: Manifest | None, items) -> Manifest | None:
    """The rows of ``manifest`` that the files of one chunk can match (by relative id or stem,
    as :meth:`Manifest.lookup`), with the whole gloss vocabulary: what a worker needs for that
    chunk. Each chunk task is pickled to its worker, so sending the whole manifest (1.5M rows,
    ~120 MB pickled) with every chunk of 256 files cost hours of pickling for a large corpus."""
    if manifest is None:
        return None
    sub = {}
    for _, clip_id in items:
        key = manifest.key_for(clip_id, _stem(clip_id))
        if key is not None:
            sub[key] = manifest.rows[key]
    return Manifest(sub, manifest.gloss_vocab)


def _record(rec):
    pose, conf = sanitize_pose(rec["pose"], rec["conf"])
    return pose.astype(np.float16), conf.astype(np.float16)


def run_chunk(args) -> dict:
    """Convert one chunk of files into ``shard-<k>.slp`` (+ its report). Runs in a worker.

    The report records ``conversion`` (the fingerprint of the whole conversion) and ``inputs``
    (each file's stat, taken *before* it is read), which :func:`_chunk_done` checks on resume."""
    k, items, out_dir, manifest, opts, conversion = args
    from . import _kernels

    _kernels.serial_only()
    report_path = os.path.join(out_dir, "chunks", f"chunk-{k:05d}.json")
    shard_path = os.path.join(out_dir, f"shard-{k:05d}.slp")
    # An old report must never vouch for the shard that replaces its own: drop it first, so a crash
    # between the shard and the new report leaves the chunk unfinished (redone), not trusted.
    if os.path.lexists(report_path):
        os.unlink(report_path)
    # Stat before reading: a file changed after this stat gets a newer mtime than the recorded one,
    # so the next run redoes the chunk instead of keeping what was read now.
    fingerprints = [input_fingerprint(path) for path, _ in items]
    poses, cols = [], {c: [] for c in ("fps", "label", "dims", "text", "key", "gloss", "split", "source", "language",
                                        "signer")}
    reasons: Counter = Counter()
    examples: dict[str, list] = {}
    layouts: Counter = Counter()
    for path, cid in items:
        try:
            rec = convert_one(path, cid, manifest, opts)
        except Skip as e:
            reasons[e.reason] += 1
            examples.setdefault(e.reason, []).append(f"{path}: {e}")
            continue
        except Exception as e:  # never let one file stop the run
            reasons["corrupt"] += 1
            examples.setdefault("corrupt", []).append(f"{path}: unexpected {type(e).__name__}: {e}")
            continue
        poses.append(_record(rec))
        cols["fps"].append(rec["fps"])
        cols["label"].append(rec["label"])
        cols["dims"].append(rec["dims"])
        cols["text"].append(rec["text"].encode("utf-8"))
        cols["key"].append(rec["key"].encode("utf-8"))
        cols["gloss"].append(np.asarray(rec["glosses"], np.int32))
        for c in ("split", "source", "language", "signer"):
            cols[c].append(str(rec[c]))
        layouts[rec["layout"]] += 1
    shard = None
    if poses:
        info = write_clip_shard(shard_path, poses, cols)
        shard = {"file": os.path.basename(shard_path), **info}
    elif os.path.lexists(shard_path):  # redone chunk whose clips are now all skipped: no stale shard stays
        os.unlink(shard_path)
    report = {"chunk": k, "files": len(items), "converted": len(poses), "skipped": dict(reasons),
              "examples": {r: v[:5] for r, v in examples.items()}, "layouts": dict(layouts), "shard": shard,
              "conversion": conversion, "inputs": fingerprints}
    atomic_write_json(report_path, report)
    return report


def _ignore_sigint() -> None:
    """Pool worker initializer. Ctrl-C goes to the whole process group: each worker printed its
    own KeyboardInterrupt traceback. The parent alone handles it (its pool stops the workers;
    a chunk cut short leaves only a temp file, removed by the next run)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _chunk_done(out_dir: str, k: int, conversion: str, items, budget: CrcBudget | None = None) -> tuple[dict | None, bool]:
    """The report of chunk ``k`` if it can be kept as it is, else None; and whether it was
    dropped because one of its input files changed since (for the report's ``changed_chunks``).

    Kept only if the report belongs to this conversion, its shard validates and matches the
    listing, and every input still has the size and mtime (and content, for racy ones) that
    the report recorded before reading it. ``budget``: shared by the chunks of one resume, so
    that their pose CRCs are read up to the budget (as a store open does), not whole."""
    rp = os.path.join(out_dir, "chunks", f"chunk-{k:05d}.json")
    if not os.path.isfile(rp):
        return None, False
    try:
        with open(rp) as f:
            rep = json.load(f)
        if not isinstance(rep, dict) or rep.get("conversion") != conversion:
            return None, False
        inputs = rep.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != len(items):
            return None, False
        if not all(input_unchanged(path, fp) for (path, _), fp in zip(items, inputs)):
            return None, True
        if rep.get("shard"):
            sh = ShardFile(os.path.join(out_dir, rep["shard"]["file"]), verify="fast", expect_kind="clips",
                           budget=budget)
            if (sh.meta.get("num_clips") != rep["shard"]["num_clips"]
                    or sh.file_size != rep["shard"].get("file_size")):
                return None, False
        return rep, False
    except (OSError, ValueError, TypeError, KeyError, ShardError):
        return None, False


def _inputs_hash(items, opts, chunk, manifest) -> str:
    """Fingerprint of a conversion: the input paths and ids, the options, ``--chunk`` and the
    manifest's *content* (an edited manifest of the same size is another conversion). What each
    input file holds is not part of it: each chunk report records its own inputs' stats, so a
    replaced input redoes its chunk instead of refusing the whole store (see the module docstring).
    ``resume`` versions the scheme, so states written by an older converter do not match."""
    h = hashlib.sha256()
    h.update(json.dumps({"resume": 2, "items": items, "opts": opts, "chunk": chunk}, sort_keys=True).encode())
    if manifest:
        with open(manifest, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _unlist(out_dir: str) -> None:
    """Make the store in ``out_dir`` incomplete before its shards change: ``store.json`` goes
    first (a crash never leaves it listing a mix of old and new shards), then the cached text
    features it lists (they describe the old clips), then the old report."""
    if os.path.lexists(os.path.join(out_dir, "store.json")):
        _unlist_store(out_dir)
    if os.path.lexists(os.path.join(out_dir, "convert_report.json")):
        os.unlink(os.path.join(out_dir, "convert_report.json"))


def _kept_text_features(out_dir: str, shards: list[dict]) -> dict:
    """The cached text-feature sets of the ``store.json`` in ``out_dir`` if it lists exactly
    ``shards`` (a rerun that redid nothing), else {}: rewriting the listing must not drop the
    features pre-training cached for these very clips (a GPU run over every text)."""
    try:
        info = read_store_json(out_dir)
    except (OSError, ShardError):
        return {}
    sets = info.get("text_features")
    return sets if info.get("shards") == shards and isinstance(sets, dict) else {}


def _unmatched_rows(man: Manifest, items, manifest: str) -> tuple[int, list[str]]:
    """How many manifest rows no input file takes (as :meth:`Manifest.lookup` matches them), and
    the first few of their ids. A manifest that no input matches at all is a mistake (ids written
    with the extension, or another corpus's manifest): ``ValueError`` naming an id of each side,
    rather than a conversion that skips every clip as missing_text. So is a row that two inputs
    take (``a/clip`` and ``b/clip`` by their stem ``clip``): one text for two clips."""
    rows = man.rows
    used: dict[str, str] = {}  # row id -> the input (clip id) that takes it
    for _, clip_id in items:
        key = man.key_for(clip_id, _stem(clip_id))
        if key is not None:
            if key in used:  # through the stem fallback: one text for two clips (see check_unique_ids)
                raise ValueError(f"--manifest: the row of id {key!r} in {manifest} is matched by two input files, "
                                 f"{used[key]!r} and {clip_id!r} (by their stem); give such clips their path "
                                 "relative to the SRC folder (without extension) as id")
            used[key] = clip_id
    if not rows:
        raise ValueError(f"--manifest: {manifest} has no rows (a header only?); no clip would get a text")
    if not used:
        raise ValueError(f"--manifest: none of the {len(rows)} ids in {manifest} matches an input file (e.g. id "
                         f"{next(iter(rows))!r}, input id {items[0][1]!r}); a row's id is the file's path relative "
                         "to its SRC folder without extension, or the file's stem")
    n = len(rows) - len(used)
    first = []
    if n:
        for k in rows:
            if k not in used:
                first.append(k)
                if len(first) == 10:
                    break
    return n, first


def _read_state(state_path: str) -> str | None:
    """The conversion fingerprint in ``convert_state.json``, or None if it is missing or unreadable
    (it is written atomically, so unreadable means damaged by something else: not trusted)."""
    try:
        with open(state_path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    h = state.get("inputs_hash") if isinstance(state, dict) else None
    return h if isinstance(h, str) else None


def _check_options(*, fps, default_fps, max_gap, layout, workers, chunk) -> None:
    def positive(x):
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
            and math.isfinite(x) and x > 0

    def integer(x):  # numpy integers as well; not True / False
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if fps is not None and not positive(fps):
        raise ValueError(f"--fps must be a positive finite frame rate (or left out to keep each clip's), got {fps!r}")
    if not positive(default_fps):
        raise ValueError(f"--default-fps must be a positive finite frame rate, got {default_fps!r}")
    if not integer(max_gap) or max_gap < 0:
        raise ValueError(f"--max-gap must be an integer >= 0 (0 disables gap filling), got {max_gap!r}")
    if not integer(workers) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")
    if not integer(chunk) or chunk < 1:
        raise ValueError(f"--chunk must be an integer >= 1 (files per shard), got {chunk!r}")
    if layout not in (None, "auto"):
        try:
            get_layout(layout)
        except ValueError as e:
            raise ValueError(f"--layout: {e}") from None


def convert(sources: list[str], out_dir: str, *, manifest: str | None = None, fps: float | None = None,
            default_fps: float = 25.0, max_gap: int = 5, layout: str | None = None, channels: str = "auto",
            split: str = "train", source: str = "", language: str = "", allow_missing_text: bool = False,
            workers: int = 1, chunk: int = 256, progress: bool = True, overwrite: bool = False,
            meta: dict | None = None) -> dict:
    """Convert ``sources`` into a store at ``out_dir`` (see the module docstring). Returns the report.

    Bad options, a missing source or an unreadable manifest raise ``ValueError`` naming the
    option before any file is converted."""
    _check_options(fps=fps, default_fps=default_fps, max_gap=max_gap, layout=layout, workers=workers, chunk=chunk)
    # plain Python numbers from here on (they go into the conversion's JSON fingerprint and
    # reports), of the type given: fps=25 and fps=25.0 keep the fingerprints they always had
    fps, default_fps, max_gap, workers, chunk = (v.item() if isinstance(v, np.generic) else v
                                                 for v in (fps, default_fps, max_gap, workers, chunk))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out: {out_dir!r} is a file, not a folder for the store")
    try:
        items = find_inputs(sources, exclude=out_dir)
    except FileNotFoundError as e:
        raise ValueError(f"SRC: {e.args[0]!r} does not exist (give pose files or folders)") from None
    if not items:
        raise ValueError(f"SRC: no pose files in {', '.join(map(repr, sources))} (looked for "
                         f"{', '.join(EXTENSIONS)})")
    check_unique_ids(items)
    if manifest and os.path.isdir(manifest):
        raise ValueError(f"--manifest: {manifest!r} is a folder, not a manifest file (CSV / TSV / JSONL)")
    if manifest and not os.path.isfile(manifest):
        raise ValueError(f"--manifest: {manifest!r} does not exist")
    try:
        man = read_manifest(manifest) if manifest else None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"--manifest: {manifest} cannot be read ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise ValueError(f"--manifest: {e}") from None
    if man is not None and man.rows and "text" not in man.fields and not allow_missing_text:
        raise ValueError(f"--manifest: {manifest} has no 'text' field (fields: {man.fields}); every clip would be "
                         "skipped as missing_text (use --allow-missing-text to convert without texts)")
    unmatched = _unmatched_rows(man, items, manifest) if man is not None else (0, [])
    opts = {"fps": fps, "default_fps": default_fps, "max_gap": max_gap, "layout": layout, "channels": channels,
            "split": split, "source": source, "language": language, "allow_missing_text": allow_missing_text}
    foreign = foreign_files(out_dir)
    if foreign:
        # never a store among the user's own files (nor --overwrite there: it would remove ours only)
        raise ValueError(f"--out: {out_dir} is a folder of other files (e.g. {foreign[0]}), not a store; give a "
                         "new or empty folder")
    h = _inputs_hash(items, opts, chunk, manifest)
    state_path = os.path.join(out_dir, STATE_FILE)
    old = _read_state(state_path)
    if old != h:
        leftovers = conversion_files(out_dir)
        if overwrite:
            _unlist(out_dir)
            for f in leftovers:
                if os.path.lexists(f):
                    os.unlink(f)
        elif old is not None:
            raise ValueError(f"--out: {out_dir} holds a conversion of other inputs/options (files added or "
                             "removed, other options or --chunk, an edited manifest, or an older slpfast); use "
                             "--overwrite to start over, or another --out")
        elif leftovers:
            # Without the state file nothing says which inputs these shards were made from.
            raise ValueError(f"--out: {out_dir} holds shards or chunk reports but no readable convert_state.json, "
                             f"so they cannot be resumed (e.g. {leftovers[0]}); use --overwrite to start over, or "
                             "another --out")
    try:
        os.makedirs(os.path.join(out_dir, "chunks"), exist_ok=True)
        atomic_write_json(state_path, {"inputs_hash": h, "num_files": len(items)})
    except OSError as e:
        raise ValueError(f"--out: cannot write the store in {out_dir} ({type(e).__name__}: "
                         f"{e.strerror or e})") from None
    chunks = [items[s:s + chunk] for s in range(0, len(items), chunk)]
    reports: dict[int, dict] = {}
    todo = []
    changed = 0
    budget = CrcBudget()  # the finished shards of a large conversion are not read whole to resume it
    for k, c in enumerate(chunks):
        rep, was_changed = _chunk_done(out_dir, k, h, c, budget)
        changed += was_changed
        if rep is not None:
            reports[k] = rep
        else:
            todo.append((k, c, out_dir, _chunk_manifest(man, c), opts, h))
    if todo:
        # The old listing (and report) would describe a mix of old and new shards until the end of
        # this run: drop them now so a crash leaves no store.json, as after an interrupted first run.
        _unlist(out_dir)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(items), initial=sum(len(chunks[k]) for k in reports), unit="clip",
                       desc="convert", file=sys.stderr)
        except ImportError:  # pragma: no cover
            bar = None
    t0 = time.time()
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=_ignore_sigint) as pool:
            for rep in pool.imap_unordered(run_chunk, todo):
                reports[rep["chunk"]] = rep
                if bar:
                    bar.update(rep["files"])
    else:
        for t in todo:
            rep = run_chunk(t)
            reports[rep["chunk"]] = rep
            if bar:
                bar.update(rep["files"])
    if bar:
        bar.close()
    shards = [reports[k]["shard"] for k in sorted(reports) if reports[k]["shard"]]
    store_meta = dict(meta or {})
    if man is not None and man.gloss_vocab:
        store_meta["gloss_vocab"] = man.gloss_vocab
    store_meta["converted_from"] = [os.path.abspath(s) for s in sources]
    if fps:
        store_meta["fps"] = fps
    write_store_json(out_dir, shards, store_meta, _kept_text_features(out_dir, shards) if not todo else None)
    skipped: Counter = Counter()
    layouts: Counter = Counter()
    examples: dict[str, list] = {}
    for k in sorted(reports):
        skipped.update(reports[k]["skipped"])
        layouts.update(reports[k].get("layouts", {}))
        for r, v in reports[k]["examples"].items():
            examples.setdefault(r, []).extend(v)
    report = {"files": len(items), "converted": sum(r["converted"] for r in reports.values()),
              "skipped": {r: skipped.get(r, 0) for r in REASONS}, "layouts": dict(layouts),
              "examples": {r: v[:10] for r, v in examples.items()}, "shards": len(shards),
              "resumed_chunks": len(chunks) - len(todo), "changed_chunks": changed,
              "manifest_unmatched": unmatched[0], "manifest_unmatched_ids": unmatched[1],
              "seconds": round(time.time() - t0, 3)}
    atomic_write_json(os.path.join(out_dir, "convert_report.json"), report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m slpfast.data.convert", description=__doc__.split("\n")[0])
    p.add_argument("sources", nargs="+", help="pose files or folders")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--manifest", help="CSV / TSV / JSONL with id,text,language,split,source[,gloss,signer,fps,label]")
    p.add_argument("--fps", type=float, default=None, help="resample to this frame rate (default: keep)")
    p.add_argument("--default-fps", type=float, default=25.0, help="fps of inputs that do not say (npy, pkl)")
    p.add_argument("--max-gap", type=int, default=5, help="interpolate missing runs up to this many frames")
    p.add_argument("--layout", default=None, help="source layout for header-less inputs (default: by #points)")
    p.add_argument("--channels", default="auto", choices=["auto", "xy", "xyz", "xyc", "xyzc"],
                   help="channels of bare .npy arrays; auto: 2 = xy, 3 = xyz (x, y, score for 133 / 137 points: "
                        "COCO-WholeBody, OpenPose), 4 = xyz + score")
    p.add_argument("--split", default="train", help="split of clips whose manifest row has none")
    p.add_argument("--source", default="", help="source name of clips whose manifest row has none")
    p.add_argument("--language", default="", help="language of clips whose manifest row has none")
    p.add_argument("--allow-missing-text", action="store_true", help="keep clips without text (text '')")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--chunk", type=int, default=256, help="files per shard (the unit of resume)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over (removing the old shards and chunk reports) if DIR holds another conversion, "
                        "or shards without their convert_state.json")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        rep = convert(a.sources, a.out, manifest=a.manifest, fps=a.fps, default_fps=a.default_fps,
                      max_gap=a.max_gap, layout=a.layout, channels=a.channels, split=a.split, source=a.source,
                      language=a.language, allow_missing_text=a.allow_missing_text, workers=a.workers,
                      chunk=a.chunk, progress=not a.no_progress, overwrite=a.overwrite)
    except ValueError as e:
        print(f"slpfast.data.convert: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slpfast.data.convert: interrupted; finished chunks are kept in {a.out}, run the same command "
              "again to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the environment (a full disk, a lost mount), not the inputs: those are skipped
        print(f"slpfast.data.convert: {type(e).__name__}: {e}; finished chunks are kept in {a.out}, run the same "
              "command again to resume once fixed", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in rep.items() if k not in ("examples", "manifest_unmatched_ids")}, indent=1))
    if rep["manifest_unmatched"]:
        print(f"note: {rep['manifest_unmatched']} manifest row(s) match no input file (e.g. "
              f"{', '.join(map(repr, rep['manifest_unmatched_ids'][:3]))})", file=sys.stderr)
    for r, ex in rep["examples"].items():
        for e in ex[:3]:
            print(f"skipped ({r}): {e}", file=sys.stderr)
    if rep["converted"] == 0:  # a store with no clips: every later use of it would fail
        reasons = ", ".join(f"{r} {n}" for r, n in rep["skipped"].items() if n)
        hint = (" (clips need a text: give --manifest with a 'text' field, or --allow-missing-text)"
                if rep["skipped"].get("missing_text") else "")
        print(f"slpfast.data.convert: no clip was converted from {rep['files']} files (skipped: {reasons}){hint}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
