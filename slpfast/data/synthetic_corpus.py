"""Writing the synthetic corpus as a store: the clip plan (kind, gloss and split of every
clip), :func:`generate_corpus` (optionally rendering in worker processes) and
:func:`default_corpus` (generated once into a cache folder).
"""
from __future__ import annotations

import os

import numpy as np

from .synthetic_language import FPS, GENERATOR_VERSION, SyntheticLanguage


def _split_of(k: int, prefix: str) -> str:
    r = (k * 7 + 3) % 10
    return f"{prefix}_val" if r == 0 else f"{prefix}_test" if r == 1 else f"{prefix}_train"


def _clip_worker(args):
    seed, num_glosses, num_signers, jobs = args
    lang = SyntheticLanguage(seed, num_glosses, num_signers)
    return [lang.clip(i, kind, g) for i, kind, g in jobs]


def corpus_plan(num_clips: int, num_glosses: int, islr_fraction: float) -> list[tuple]:
    """(index, kind, gloss, split) of every clip: ISLR clips cycle over the glosses."""
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
                    shard_clips: int = 2048, overwrite: bool = True):
    """Generate the synthetic corpus into a store at ``out_dir``; returns the opened Store.

    Deterministic: the same arguments give byte-identical shards. ``workers`` > 1 renders in
    that many processes (same output); "auto": all cores for 1500 clips or more. With ``overwrite=False`` an existing complete store
    generated with the same arguments is reused as is.
    """
    from .store_reader import Store

    if not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
        raise ValueError(f"generate_corpus: num_clips must be an int >= 1, got {num_clips!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"generate_corpus: seed must be an int >= 0, got {seed!r}")
    if not isinstance(num_signers, (int, np.integer)) or num_signers < 1:
        raise ValueError(f"generate_corpus: num_signers must be an int >= 1, got {num_signers!r}")
    if not 0.0 <= islr_fraction <= 1.0:
        raise ValueError(f"generate_corpus: islr_fraction must be in [0, 1], got {islr_fraction!r}")
    settings = {"num_clips": num_clips, "seed": seed, "num_glosses": num_glosses,
                "num_signers": num_signers, "islr_fraction": islr_fraction}
    if not overwrite and os.path.isfile(os.path.join(out_dir, "store.json")):
        try:
            st = Store(out_dir)
            if st.meta.get("synthetic", {}).get("settings") == settings and \
                    st.meta["synthetic"].get("version") == GENERATOR_VERSION:
                return st
        except Exception:
            pass
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
    if workers and workers > 1:
        import multiprocessing as mp

        chunk = 256
        jobs = [(seed, num_glosses, num_signers, [(i, k, g) for i, k, g, _ in plan[s: s + chunk]])
                for s in range(0, len(plan), chunk)]
        with mp.get_context("spawn").Pool(workers) as pool:
            clips_iter = (c for batch in pool.imap(_clip_worker, jobs) for c in batch)
            _write(out_dir, plan, clips_iter, meta, shard_clips)
    else:
        _write(out_dir, plan, (lang.clip(i, k, g) for i, k, g, _ in plan), meta, shard_clips)
    return Store(out_dir)


def _write(out_dir, plan, clips, meta, shard_clips):
    from .store_writer import StoreWriter

    with StoreWriter(out_dir, meta={"synthetic": meta, "fps": FPS}, shard_clips=shard_clips) as w:
        for (i, kind, _, split), c in zip(plan, clips):
            w.add(c["pose"], c["conf"], text=c["text"], split=split, source="synthetic", language="synthetic-sl",
                  signer=c["signer"], fps=FPS, label=c["label"], glosses=c["glosses"], key=f"synthetic-{i:07d}",
                  dims=3)


def default_corpus(cache_dir: str | None = None, **kwargs):
    """The default synthetic corpus, generated into a cache folder on first use (then reused)."""
    cache_dir = cache_dir or os.path.join(os.environ.get("SLPFAST_CACHE", os.path.expanduser("~/.cache/slpfast")), "synthetic")
    return generate_corpus(cache_dir, overwrite=False, **kwargs)
