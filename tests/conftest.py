"""Shared pytest set-up.

- ``TRITON_INTERPRET=1`` when no GPU is present (set before anything imports triton).
- Seeds every RNG before each test.
- ``@pytest.mark.cuda`` tests are skipped without CUDA.
- ``run_distributed(fn, world_size=2, *args)`` runs ``fn(rank, world_size, *args)`` in fresh
  processes joined by a gloo process group on localhost and re-raises the first failure.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import sys
import traceback

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


HAS_CUDA = _has_cuda()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # lets tests import the helpers beside them


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA (run by bench/gpu_check.sh on the GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _worker(rank, world_size, store_path, fn, args, errors, group_timeout_s=None):
    import datetime

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # Rendezvous through a file, not a TCP port picked in advance: a free port found here can be
    # taken by another process before the store binds it (seen when test runs overlap).
    timeout = {} if group_timeout_s is None else {"timeout": datetime.timedelta(seconds=group_timeout_s)}
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size, **timeout)
    try:
        fn(rank, world_size, *args)
    except BaseException:
        errors.put((rank, traceback.format_exc()))
    finally:
        # Every rank reaches here before any tears the group down: a rank that destroys its
        # group while a peer still talks to it can abort the peer.
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def run_distributed(fn, world_size: int = 2, *args, timeout: float = 240.0, group_timeout_s: float | None = None) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; fail on any error.
    ``group_timeout_s``: the default process group's timeout (torch's default when None).

    ``fn`` must be importable at module level (it is pickled into spawned processes).
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    store_dir = tempfile.mkdtemp(prefix="slpfast-dist-")
    store_path = os.path.join(store_dir, "rendezvous")
    procs = [ctx.Process(target=_worker, args=(r, world_size, store_path, fn, args, errors, group_timeout_s))
             for r in range(world_size)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        for p in procs:
            if p.is_alive():
                p.kill()
                raise AssertionError(f"distributed test timed out after {timeout}s")
        if not errors.empty():
            rank, tb = errors.get()
            raise AssertionError(f"rank {rank} failed:\n{tb}")
        codes = [p.exitcode for p in procs]
        assert codes == [0] * world_size, f"worker exit codes {codes}"
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)

@pytest.fixture
def distributed():
    """Fixture form of :func:`run_distributed`."""
    return run_distributed
