"""slpfast.train.distributed.run_on_main: rank 0's one-off work before training (the synthetic
corpus, the text-feature cache of a large store) under 2 gloo processes."""
from __future__ import annotations

import time

import pytest
import torch

from conftest import run_distributed

GROUP_TIMEOUT_S = 3.0  # the default group's timeout in these tests: rank 0's work takes longer


def _info(rank, world):
    from slpfast.train.distributed import DistInfo

    return DistInfo(rank, world, rank, world, torch.device("cpu"))


def _slow_work_outlasts_the_group_timeout(rank, world, out_dir):
    import json
    import os

    from slpfast.train.distributed import run_on_main

    calls = []

    def work():
        calls.append(rank)
        time.sleep(2 * GROUP_TIMEOUT_S)  # a plain barrier of the default group times out here
        return {"name": "features-1"}

    got = run_on_main(_info(rank, world), work, "caching")
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"result": got, "ran_work": calls}, f)


def _rank0_error_reaches_every_rank(rank, world):
    from slpfast.train.distributed import run_on_main

    def work():
        raise ValueError("data.store: shard 3 is truncated")

    with pytest.raises(ValueError, match="data.store: shard 3 is truncated") as e:
        run_on_main(_info(rank, world), work, "caching the text features")
    if rank == 1:
        assert "caching the text features failed on rank 0" in str(e.value)

    def crash():
        raise OSError("disk full")

    expected = OSError if rank == 0 else RuntimeError  # a non-ValueError is not bad input elsewhere
    with pytest.raises(expected, match="disk full"):
        run_on_main(_info(rank, world), crash, "generating the synthetic corpus")


def _peer_dies_before_the_call(rank, world):
    import os

    from slpfast.train.distributed import run_on_main

    if rank == 1:
        os._exit(0)  # e.g. its text encoder failed to load: it never reaches run_on_main
    t0 = time.monotonic()
    with pytest.raises(RuntimeError):
        run_on_main(_info(rank, world), lambda: None, "caching", timeout_s=300)
    # the default group's timeout, not run_on_main's long one
    assert time.monotonic() - t0 < 4 * GROUP_TIMEOUT_S


def test_a_rank_that_never_arrives_fails_the_others_within_the_group_timeout():
    import tempfile

    import torch.multiprocessing as mp
    from conftest import _worker

    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    path = tempfile.mktemp(prefix="slpfast-dist-")
    procs = [ctx.Process(target=_worker, args=(r, 2, path, _peer_dies_before_the_call, (), errors, GROUP_TIMEOUT_S))
             for r in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert not any(p.is_alive() for p in procs), "rank 0 still waits for the rank that died"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    # rank 0's own assertions ran: only the teardown barrier with the dead peer may have failed
    assert not any("AssertionError" in tb or "DID NOT RAISE" in tb for _, tb in failures), failures


def test_rank0_work_may_outlast_the_process_group_timeout(tmp_path):
    import json

    run_distributed(_slow_work_outlasts_the_group_timeout, 2, str(tmp_path), group_timeout_s=GROUP_TIMEOUT_S,
                    timeout=120)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [g["result"] for g in got] == [{"name": "features-1"}] * 2  # rank 0's result on every rank
    assert [g["ran_work"] for g in got] == [[0], []]  # the work ran on rank 0 alone


def test_an_error_on_rank0_stops_every_rank_at_once():
    t0 = time.monotonic()
    run_distributed(_rank0_error_reaches_every_rank, 2, timeout=120)
    assert time.monotonic() - t0 < 60  # the others do not wait out run_on_main's 48 h timeout


def test_one_process_runs_the_work_in_place():
    from slpfast.train.distributed import run_on_main

    assert run_on_main(_info(0, 1), lambda: 7, "anything") == 7
