"""Writing the synthetic corpus as a store: the clip plan (kind, gloss and split of every
clip), :func:`generate_corpus` (optionally rendering in worker processes) and
:func:`default_corpus` (generated once into a cache folder).
"""
from __future__ import annotations

import json
import os

import numpy as np

from .synthetic_language import FPS, GENERATOR_VERSION, SyntheticLanguage
from .synthetic_vocabulary import MIN_GLOSSES


def _check_int(fn: str, name: str, value, minimum: int, hint: str = "") -> int:
    """``value`` as a plain int >= ``minimum``, else ValueError naming ``fn`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}{hint}, got {value!r}")
    return int(value)


def _check_fraction(fn: str, value) -> float | int:
    """``islr_fraction`` checked to be a number in [0, 1] (plain Python number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{fn}: islr_fraction must be a number in [0, 1], got {value!r}")
    return value if type(value) in (int, float) else float(value)


#: Written into a corpus folder before anything else is: the folder is the generator's to
#: rewrite even when its store.json is missing (an interrupted generation) or unreadable.
MARKER = ".slpfast-synthetic"


def _foreign_store_problem(out_dir) -> str | None:
    """Why ``out_dir`` must not be generated over with overwrite=False (None: it may be).

    A folder may be rewritten when it holds nothing of a store, a synthetic corpus's listing,
    or the generator's marker. Anything else (another store's listing, a listing that cannot be
    read, or shards without a listing: a store still being written) is left alone: reading it
    as "not a store" could delete real data over a passing I/O error."""
    if not os.path.isdir(out_dir) or os.path.isfile(os.path.join(out_dir, MARKER)):
        return None
    listing = os.path.join(out_dir, "store.json")
    if os.path.isfile(listing):
        try:
            with open(listing) as f:
                meta = json.load(f).get("meta")
        except (OSError, ValueError, AttributeError) as e:
            return f"holds a store.json that cannot be read ({type(e).__name__})"
        return None if isinstance(meta, dict) and "synthetic" in meta else "holds a store that is not a synthetic corpus"
    if any(f.endswith(".slp") for f in os.listdir(out_dir)):
        return "holds shards without a store.json (a store being written?)"
    return None


def _split_of(k: int, prefix: str) -> str:
    r = (k * 7 + 3) % 10
    return f"{prefix}_val" if r == 0 else f"{prefix}_test" if r == 1 else f"{prefix}_train"


def _clip_worker(args):
    seed, num_glosses, num_signers, jobs = args
    lang = SyntheticLanguage(seed, num_glosses, num_signers)
    return [lang.clip(i, kind, g) for i, kind, g in jobs]


def corpus_plan(num_clips: int, num_glosses: int, islr_fraction: float) -> list[tuple]:
    """(index, kind, gloss, split) of every clip: ISLR clips cycle over the glosses.

    The first ``round(num_clips * islr_fraction)`` clips are ISLR clips; cycle k over the
    glosses goes to one split as a whole (cycle 0 to train, 1 to val, 4 to test, then about
    80/10/10), so every gloss is in every ISLR split once there are 5 cycles or more.
    ``gloss`` is None for sentence clips.
    """
    num_clips = _check_int("corpus_plan", "num_clips", num_clips, 0)
    num_glosses = _check_int("corpus_plan", "num_glosses", num_glosses, 1)
    islr_fraction = _check_fraction("corpus_plan", islr_fraction)
    n_islr = int(round(num_clips * islr_fraction))
    plan = []
    for i in range(num_clips):
        if i < n_islr:
            g = i % num_glosses
            plan.append((i, "islr", g, _split_of(i // num_glosses, "islr")))
        else:
            plan.append((i, "sentence", None, _split_of(i - n_islr, "sentence")))
    return plan


def generate_corpus(out_dir: str, num_clips: int = 4000, seed: int = 0, *, num_glosses: int = 100,
                    num_signers: int = 10, islr_fraction: float = 0.5, workers: int | str = "auto",
                    shard_clips: int = 2048, overwrite: bool = True, progress: bool = False):
    """Generate the synthetic corpus into a store at ``out_dir``; returns the opened Store.

    Deterministic: the same arguments give byte-identical shards. ``workers`` > 1 renders in
    that many processes (same output); "auto": all cores (at most 8) for 1500 clips or more.
    With ``overwrite=False`` an existing complete store generated with the same arguments is
    reused as is, a synthetic corpus generated with other arguments (or an interrupted one) is
    generated again, and a folder that may hold another store (its listing, an unreadable
    listing, or shards without one) raises ``FileExistsError``.
    ``store.json`` is written last, so an interrupted generation leaves no store that opens.
    Bad arguments raise ``ValueError`` naming the argument. ``progress``: a tqdm bar over the
    clips while they are generated (nothing is shown when the store is reused).
    """
    from .store_reader import Store

    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"generate_corpus: out_dir must be a path, got {type(out_dir).__name__} {out_dir!r}")
    num_clips = _check_int("generate_corpus", "num_clips", num_clips, 1)
    seed = _check_int("generate_corpus", "seed", seed, 0)
    num_glosses = _check_int("generate_corpus", "num_glosses", num_glosses, MIN_GLOSSES)
    num_signers = _check_int("generate_corpus", "num_signers", num_signers, 1)
    islr_fraction = _check_fraction("generate_corpus", islr_fraction)
    shard_clips = _check_int("generate_corpus", "shard_clips", shard_clips, 1)
    if workers != "auto":
        workers = _check_int("generate_corpus", "workers", workers, 0, hint=' or "auto"')
    # plain Python numbers: the settings go into store.json (JSON has no numpy integers)
    settings = {"num_clips": num_clips, "seed": seed, "num_glosses": num_glosses,
                "num_signers": num_signers, "islr_fraction": islr_fraction}
    problem = None if overwrite else _foreign_store_problem(out_dir)
    if problem:
        raise FileExistsError(f"generate_corpus: {os.fspath(out_dir)!r} {problem}; with overwrite=False it is left "
                              f"as is (give another out_dir)")
    if not overwrite and os.path.isfile(os.path.join(out_dir, "store.json")):
        try:
            st = Store(out_dir)
            if st.meta.get("synthetic", {}).get("settings") == settings and \
                    st.meta["synthetic"].get("version") == GENERATOR_VERSION:
                return st
        except Exception:  # an unreadable or damaged synthetic corpus: generated again
            pass
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, MARKER), "w") as f:  # before any file is removed or written
        f.write("a synthetic corpus of slpfast.data.synthetic: generate_corpus may rewrite this folder\n")
    if os.path.isdir(out_dir):
        for f in os.listdir(out_dir):
            if f.endswith(".slp") or ".slp.tmp-" in f or f == "store.json":
                os.unlink(os.path.join(out_dir, f))
    lang = SyntheticLanguage(seed, num_glosses, num_signers)
    meta = lang.meta()
    meta["settings"] = settings
    plan = corpus_plan(num_clips, num_glosses, islr_fraction)
    if workers == "auto":
        workers = min(os.cpu_count() or 1, 8) if num_clips >= 1500 else 0
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        chunk = 256
        jobs = [(seed, num_glosses, num_signers, [(i, k, g) for i, k, g, _ in plan[s: s + chunk]])
                for s in range(0, len(plan), chunk)]
        # an executor, not a Pool: a worker that dies (killed, or a script that starts the
        # generation without an ``if __name__ == "__main__":`` guard) raises BrokenProcessPool
        # here instead of leaving the generation waiting forever
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        try:
            clips_iter = (c for batch in pool.map(_clip_worker, jobs) for c in batch)
            _write(out_dir, plan, clips_iter, meta, shard_clips, progress)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        _write(out_dir, plan, (lang.clip(i, k, g) for i, k, g, _ in plan), meta, shard_clips, progress)
    return Store(out_dir)


def _write(out_dir, plan, clips, meta, shard_clips, progress=False):
    from .store_writer import StoreWriter

    if progress:
        from tqdm import tqdm

        clips = tqdm(clips, total=len(plan), desc=f"generating the synthetic corpus in {out_dir}", unit="clip",
                     leave=False)
    with StoreWriter(out_dir, meta={"synthetic": meta, "fps": FPS}, shard_clips=shard_clips) as w:
        for (i, kind, _, split), c in zip(plan, clips):
            w.add(c["pose"], c["conf"], text=c["text"], split=split, source="synthetic", language="synthetic-sl",
                  signer=c["signer"], fps=FPS, label=c["label"], glosses=c["glosses"], key=f"synthetic-{i:07d}",
                  dims=3)


def default_corpus(cache_dir: str | None = None, **kwargs):
    """The default synthetic corpus, generated into a cache folder on first use (then reused)."""
    cache_dir = cache_dir or os.path.join(os.environ.get("SLPFAST_CACHE", os.path.expanduser("~/.cache/slpfast")), "synthetic")
    return generate_corpus(cache_dir, overwrite=False, **kwargs)
