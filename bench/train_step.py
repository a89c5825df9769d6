"""Pre-training step throughput: slpfast against a plain-PyTorch baseline, in the same run.

Both providers run the same :class:`slpfast.train.trainer.Trainer` step (same model sizes,
losses, optimizer, bf16 autocast on GPU, MPM masks, cached text features) on the same
synthetic store; the baseline swaps in what a typical research repo uses
(see ``bench/_train_baseline.py``): ``nn.MultiheadAttention`` with ``key_padding_mask``, the
naive N x N contrastive loss, and per-sample numpy normalization/augmentation in DataLoader
workers. A step includes waiting for its batch, so data-path costs count.

    python bench/train_step.py              # tiny and base
    python bench/train_step.py --quick      # CI / GPU check: tiny only, few steps
    python bench/train_step.py --sizes base --batch 256 --json out.jsonl

Reported: median step time (steady state, steps driven as ``Trainer.run`` drives them, see
:func:`time_steps`), clips/s, speed-up over the baseline, on GPU MFU (model FLOPs from
:func:`slpfast.train.data.flops_coefficients` over the dense bf16 peak), and ``host_ms``, the
host time to queue a step (on a GPU: near the step time means host-bound).
"""
from __future__ import annotations

import collections
import gc
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from _common import Results, base_parser, int_at_least, name_list  # noqa: E402
from _train_baseline import BaselineDataset, baseline_collate, to_baseline  # noqa: E402


def _config(args, size: str, store: str, out_dir: str):
    from slpfast.models import default_text_model_path
    from slpfast.train.config import parse_args

    text = "minilm" if default_text_model_path() and not args.small_text else "small"
    return parse_args([f"--model.size={size}", f"--data.store={store}", f"--data.batch_size={args.batch}",
                       f"--data.max_frames={args.max_frames}", f"--text.kind={text}", "--train.progress=false",
                       "--train.tensorboard=false", f"--train.out_dir={out_dir}", "--train.steps=100000",
                       f"--train.compile={str(args.compile).lower()}",
                       f"--data.packed={str(args.layout == 'packed').lower()}"])


def _baseline(trainer, args) -> None:
    """Turn a Trainer into the plain-PyTorch baseline (see the module docstring)."""
    from slpfast.models.masking import sample_joint_mask
    from slpfast.models.text_encoder import TextFeatures
    from slpfast.train.optim import build_optimizer, build_scheduler

    cfg, data = trainer.cfg, trainer.data
    model = to_baseline(trainer.raw_model)
    trainer.raw_model = trainer.model = model
    if cfg.train.compile:  # --compile compiles both providers (the Trainer compiled the model it replaced)
        trainer.model = torch.compile(model)
    trainer.optimizer = build_optimizer(model, cfg.optim)
    trainer.scheduler = build_scheduler(trainer.optimizer, cfg.optim, cfg.train.steps)
    indices = data.store.indices(data.splits) if data.splits else range(len(data.store))
    ds = BaselineDataset(data.store, list(indices), cfg.data.max_frames, data.feature_name, seed=cfg.train.seed)
    workers = args.workers
    data.loader = torch.utils.data.DataLoader(ds, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                                              num_workers=workers, collate_fn=baseline_collate,
                                              persistent_workers=True, pin_memory=trainer.device.type == "cuda")
    data._iter = None

    copy = data.copier  # the trainer's own host->device path (pinned batches, no host wait)

    def prepare(batch, step, micro, device):
        # The batch's lengths stay on the host as well (as slpfast's prepare keeps them): the
        # trainer counts clips and frames from them instead of reading the device lengths back,
        # and the copies do not block, so on a GPU the baseline's next step is queued while the
        # current one runs, exactly as slpfast's is (a blocking .to(device) or a read-back
        # waits for the whole queued step: no overlap of host and GPU work).
        host_lengths = batch["lengths"]
        pose, conf, lengths = copy(batch["pose"], batch["conf"], host_lengths)
        gen = torch.Generator(device=device).manual_seed(step * 131 + micro)
        mask = sample_joint_mask(lengths, batch["pose"].shape[1], strategy=cfg.mpm.strategy, ratio=cfg.mpm.ratio,
                                 span=cfg.mpm.span, generator=gen)
        text = None
        if data.feature_name is not None:
            text = TextFeatures(*copy(batch["text_features"], batch["text_token_features"],
                                      batch["text_token_lengths"]))
        kw = dict(pose=pose, conf=conf, lengths=lengths, joint_mask=mask, text=text)
        if data.trainable_text is not None:
            kw["texts"] = list(batch["text"])
        return {"lengths": lengths, "host_lengths": host_lengths, "model_kwargs": kw}

    data.prepare = prepare


def profile_steps(trainer, steps: int, title: str, rows: int = 20) -> None:
    """Print the ops that take the most time over ``steps`` training steps (torch profiler;
    self time, so each row is time spent in that op itself): where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=acts) as prof:
            for _ in range(steps):
                trainer.train_step()
            if cuda:
                torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001  (the timings above are already recorded)
        print(f"# profile: {title}: the profiler failed ({type(exc).__name__}: {exc})")
        return
    print(f"# profile: {title}, {steps} steps")
    print(prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                    row_limit=rows))


def time_steps(trainer, warmup: int, repeats: int) -> tuple[list[float], list[float], list[float], dict]:
    """Wall ms per step in the steady state, with the steps driven as ``Trainer.run`` drives
    them: ``pipeline_depth`` steps queued ahead of the one whose results are read (on a GPU the
    next batch is loaded and prepared while a step runs). A step's time is the interval
    between the reads of its results and of the previous step's. Also the host ms spent
    queuing each step (loading its batch and launching its work): on a GPU, a host time
    close to the step time means the host, not the GPU, sets the pace. Returns (step times,
    host times, the model FLOPs of each timed step, in the order of the step times, the last
    step's counters). A step's FLOPs follow its clips' lengths, which vary from batch to batch:
    MFU must take them from the timed steps themselves (:func:`mfu`)."""
    times, host, flops, stats, queue, last = [], [], [], {}, collections.deque(), None
    for r in range(warmup + repeats + trainer.pipeline_depth):
        t0 = time.perf_counter()
        queue.append(trainer.issue_step())
        if r >= warmup and len(host) < repeats:
            host.append((time.perf_counter() - t0) * 1e3)
        while len(queue) > trainer.pipeline_depth:
            stats = queue.popleft().result()[1]
            now = time.perf_counter()
            if last is not None and len(times) < repeats and r - trainer.pipeline_depth >= warmup:
                times.append((now - last) * 1e3)
                flops.append(stats["flops"])
            last = now
    while queue:
        stats = queue.popleft().result()[1]
    return times, host, flops, stats


def mfu(flops: list[float], times_ms: list[float], peak: float | None) -> float | None:
    """Model FLOPs utilization of the timed steps: their mean FLOPs over the median step time
    (the time clips/s is computed from), as a fraction of ``peak`` FLOP/s (None: no peak known,
    e.g. on the CPU). ``flops[i]`` belongs to the step timed by ``times_ms[i]``."""
    if not peak or not flops or not times_ms:
        return None
    if len(flops) != len(times_ms):
        raise ValueError(f"mfu: {len(flops)} FLOP counts for {len(times_ms)} step times")
    return statistics.fmean(flops) / (statistics.median(times_ms) / 1e3) / peak


def run(args) -> Results:
    from slpfast.data.synthetic import generate_corpus
    from slpfast.train.trainer import Trainer, _peak_flops

    res = Results("train_step", args.json, quick=args.quick)
    # enough clips for several batches per epoch (both loaders drain their pipelines at epoch ends)
    clips = max(256 if args.quick else 2000, 16 * args.batch)
    store = os.path.expanduser(os.path.join(os.environ.get("SLPFAST_CACHE", "~/.cache/slpfast"), f"bench-train-{clips}"))
    generate_corpus(store, clips, 0, overwrite=False)
    for size in args.sizes:
        # Providers run one after the other, never side by side: the baseline's DataLoader workers
        # prefetch in the background and would otherwise bill their CPU time to the other
        # provider. On a shared CPU machine the load drifts, so the full run alternates
        # baseline/slpfast blocks (``--rounds``) and reports the median over all of them.
        times = {"baseline": [], "slpfast": []}
        host_times = {"baseline": [], "slpfast": []}
        step_flops = {"baseline": [], "slpfast": []}
        info = {}
        for _ in range(args.rounds):
            for provider in ("baseline", "slpfast"):
                with tempfile.TemporaryDirectory() as tmp:
                    tr = Trainer(_config(args, size, store, tmp))
                    if provider == "baseline":
                        _baseline(tr, args)
                    ts, hs, fl, stats = time_steps(tr, args.warmup, args.repeats)
                    times[provider] += ts
                    host_times[provider] += hs
                    step_flops[provider] += fl
                    if args.profile and _ == args.rounds - 1:
                        profile_steps(tr, args.profile, f"{size} {provider}")
                    info[provider] = dict(stats=stats, device=tr.device, batch=tr.cfg.data.batch_size,
                                          clips_step=tr.cfg.data.batch_size * tr.cfg.optim.accum_steps,
                                          max_frames=tr.cfg.data.max_frames,
                                          params_m=sum(x.numel() for x in tr.raw_model.parameters()) / 1e6)
                    it = tr.data._iter  # stop loader workers before anything else runs
                    tr.data._iter = None
                    if hasattr(it, "_shutdown_workers"):
                        it._shutdown_workers()
                    tr.close()
                    del tr, it
                    gc.collect()
        base_ms = statistics.median(times["baseline"])
        for p in ("baseline", "slpfast"):
            ts, d = sorted(times[p]), info[p]
            med = statistics.median(ts)
            peak = _peak_flops(d["device"])
            res.add(size=size, provider=p, layout="padded" if p == "baseline" else args.layout, compiled=args.compile,
                    batch=d["batch"],
                    max_frames=d["max_frames"], median_ms=med,
                    p20_ms=ts[int(0.2 * (len(ts) - 1))], p80_ms=ts[int(0.8 * (len(ts) - 1))],
                    clips_per_s=d["clips_step"] / (med / 1e3), speedup=base_ms / med,
                    mfu=mfu(step_flops[p], times[p], peak),
                    data_ms=d["stats"]["data_s"] * 1e3, host_ms=statistics.median(host_times[p]),
                    params_m=d["params_m"], steps=len(ts))
    return res


def main(argv=None) -> None:
    from slpfast.models.encoder import SIZES, PoseEncoderConfig

    from slpfast.train.data import longest_augmentable

    # data.max_frames, slowed down by the augmentation, must fit the model's position table
    longest = longest_augmentable(PoseEncoderConfig().max_frames)
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=name_list(SIZES), default=None, metavar="NAMES",
                   help=f"comma-separated model sizes from {','.join(SIZES)} (default tiny,base; --quick: tiny)")
    p.add_argument("--batch", type=int_at_least(1), default=None, metavar="N",
                   help="clips per step (default 16 CPU / 256 GPU; --quick 8 / 64)")
    p.add_argument("--max-frames", type=int_at_least(2, longest), default=None, metavar="T",
                   help=f"longest clip, in [2, {longest}] (slowed down by the augmentation it must fit the model; default 128; --quick 64)")
    p.add_argument("--workers", type=int_at_least(1), default=None, metavar="N",
                   help="baseline DataLoader workers, >= 1 (default 2 CPU / 8 GPU); slpfast uses its config's "
                        "loader threads (data.num_workers=-1: 2 on a GPU, none on the CPU)")
    p.add_argument("--warmup", type=int_at_least(0), default=None, metavar="N",
                   help="untimed steps (default 3; --quick 2)")
    p.add_argument("--rounds", type=int_at_least(1), default=None, metavar="N",
                   help="alternating baseline/slpfast blocks (default 2; --quick 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (both providers)")
    p.add_argument("--layout", default="packed", choices=["packed", "padded"],
                   help="how slpfast feeds clips (the baseline always pads, as research code does)")
    p.add_argument("--small-text", action="store_true", help="small trainable text encoder instead of cached MiniLM")
    p.add_argument("--profile", type=int_at_least(0), default=0, metavar="STEPS",
                   help="after timing, profile STEPS more steps of each provider and print the top ops")
    args = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    args.sizes = args.sizes or (["tiny"] if args.quick else ["tiny", "base"])
    args.batch = args.batch or ((8 if args.quick else 16) if not gpu else (64 if args.quick else 256))
    args.max_frames = args.max_frames or (64 if args.quick else 128)
    args.workers = args.workers if args.workers is not None else (8 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run(args)
    res.print_table(["size", "provider", "layout", "batch", "max_frames", "median_ms", "clips_per_s", "speedup", "mfu",
                     "data_ms", "host_ms", "params_m"])


if __name__ == "__main__":
    main()
