"""Benchmark of pose normalization + augmentation on a padded batch, every provider in one run.

    python bench/pose.py                 # B=256, T~U(32,256), canonical J=123, C=3, float16
    python bench/pose.py --quick         # CI / GPU check: B=32, T~U(16,64)
    python bench/pose.py --json bench/results/pose.jsonl

Workloads (same batch):
  affine  normalize + flip + 2-D affine (rotation, shear, y scale), speed 1: what pose-format
          can do (its per-clip ``normalize`` + ``augment2d``; flip there only negates x)
  full    normalize + speed U(0.7, 1.4) resampling + flip + affine + translation + jitter +
          joint/frame/part dropout (pose-format has no equivalent)
Providers:
  ext-cpu       slpfast.ops.augment_pose(normalize=True) on CPU (at::parallel_for, fused)
  reference     slpfast.reference.pose one clip at a time (numpy, what research repos do)
  pose-format   pose_format Pose.normalize + body.augment2d one clip at a time (affine only)
  torch-chain   the same math as batched eager torch ops (bench/_pose_chain.py)
  ext-cuda, torch-chain-cuda   on a GPU, plus the device's copy bandwidth for reference;
                ext-cuda-op is the custom op alone (no Python checks / host syncs);
                ext-cuda-host-lengths the wrapper with lengths and clip ids on the host (its
                checks run there: no device->host sync), ext-cuda the wrapper with them on the GPU
GPU timings use CUDA events over back-to-back calls (``triton.testing.do_bench``), so launch
latency is amortized as it is in a training step; the full GPU run adds ``ext-cuda-op`` rows at
larger batches (``--gpu-batches``), where the op is long enough to be bandwidth-bound.
``device_ms`` of ``ext-cuda-op`` at B=256 is its kernels' own time per call, ``kernels_us`` (JSON)
each kernel's share (torch profiler): which of them (plan, element, layout copy) sets the pace.
GB/s counts the bytes the op must move: the valid input frames (pose + conf; padding is never
read) and the whole output (pose + conf; padding rows are written as zeros). ``vs_pf`` is the
speed-up over pose-format's per-clip loop measured in the same run (wall clock; the extension
uses every torch thread, pose-format one). ``cpu_ms`` is the process CPU time per call (all
threads) and ``vs_pf_cpu`` the ratio of CPU times: robust on a shared, oversubscribed machine,
where wall-clock ratios mostly measure the scheduler.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Results, base_parser, int_list, measure, name_list, op_times  # noqa: E402
from _pose_chain import ChainLayout, normalize_augment_chain  # noqa: E402

from slpfast import layouts  # noqa: E402
from slpfast.ops import pose as P  # noqa: E402
from slpfast.reference import pose as R  # noqa: E402

try:
    import pose_format  # noqa: F401

    HAVE_POSE_FORMAT = True
except ImportError:  # e.g. the GPU check machine: that provider is skipped
    HAVE_POSE_FORMAT = False

WORKLOADS = {
    "affine": P.AugmentConfig(flip_p=0.5),
    "full": P.AugmentConfig(flip_p=0.5, speed_min=0.7, speed_max=1.4, translate_std=0.05, jitter_std=0.01,
                            joint_drop_p=0.05, frame_drop_p=0.05, part_drop_p=0.05),
}


DEVICES = ("cpu", "cuda")


def make_batch(B, t_lo, t_hi, C, dtype, seed=0):
    """Pixel-space pose with ~10% missing joints (one clip in four without a right hand)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t_lo, t_hi + 1, (B,), generator=g)
    T = int(lengths.max())
    J = layouts.NUM_JOINTS
    base = torch.tensor([320.0, 240.0, 0.0])[:C]
    pose = base + 80.0 * torch.randn(B, T, J, C, generator=g)
    pose[:, :, layouts.LEFT_SHOULDER] = base + torch.tensor([60.0, 0.0, 0.0])[:C]
    pose[:, :, layouts.RIGHT_SHOULDER] = base - torch.tensor([60.0, 0.0, 0.0])[:C]
    conf = torch.rand(B, T, J, generator=g) * 0.9 + 0.1
    conf[torch.rand(B, T, J, generator=g) < 0.1] = 0.0
    conf[::4, :, layouts.PART_SLICES["right_hand"]] = 0.0
    pad = torch.arange(T)[None] >= lengths[:, None]
    conf[pad], pose[pad] = 0.0, 0.0
    return pose.to(dtype), conf, lengths


def pose_format_loop(pose_np, conf_np, lengths, rng):
    """pose-format per clip: normalize about the shoulders, then augment2d (its own RNG)."""
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose import Pose
    from pose_format.pose_header import PoseNormalizationInfo

    info = PoseNormalizationInfo(p1=layouts.LEFT_SHOULDER, p2=layouts.RIGHT_SHOULDER)
    out = []
    for b, n in enumerate(lengths):
        body = NumPyPoseBody(25.0, pose_np[b, :n, None].astype(np.float32), conf_np[b, :n, None])
        p = Pose(None, body).normalize(info)
        if rng.random() < 0.5:
            p.body = p.body.flip(axis=0)
        out.append(p.body.augment2d(rotation_std=0.2, shear_std=0.2, scale_std=0.2).data)
    return out


def reference_loop(pose_np, conf_np, lengths, ids, seed, cfg, spec):
    out = []
    for b, n in enumerate(lengths):
        params = R.sample_params(seed, int(ids[b]), cfg, spec.num_parts)
        out.append(R.augment_clip(pose_np[b, :n], conf_np[b, :n], params, spec, dtype=pose_np.dtype.type, seed=seed,
                                  clip_id=int(ids[b]), cfg=cfg, normalize=True))
    return out


def cpu_time_ms(fn, repeats: int) -> float:
    """Median process CPU time (all threads) of fn() in ms; CPU providers only."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times)


def gpu_time(fn) -> dict:
    """Median and p20/p80 ms of ``fn()`` on the GPU from CUDA events over back-to-back calls."""
    import triton.testing

    med, p20, p80 = triton.testing.do_bench(fn, warmup=25, rep=200, quantiles=[0.5, 0.2, 0.8])
    return {"median_ms": med, "p20_ms": p20, "p80_ms": p80}


def copy_bandwidth(device) -> float:
    """GB/s of a device-to-device copy of 1 GiB (read + write), timed like the ops."""
    src = torch.empty(256 * 2**20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = gpu_time(lambda: dst.copy_(src))["median_ms"]
    return 2 * src.numel() * 4 / (t * 1e-3) / 1e9


def bytes_moved(lengths: torch.Tensor, out_shape: tuple, C: int, elem: int) -> int:
    """Bytes an augment call must move: valid input frames in, the whole output out."""
    per_joint = C * elem + 4  # pose + float confidence
    out_rows = out_shape[0] * out_shape[1]
    return (int(lengths.sum()) + out_rows) * layouts.NUM_JOINTS * per_joint


def raw_augment(x, c, n, ids, seed, cfg, spec, normalize: bool = True):
    """The custom op alone (no argument checks or host syncs of the Python wrapper) and its
    output frame count."""
    params = P.sample_augment_params(ids, seed, cfg)
    out_len = R.resampled_length(x.shape[1], cfg.speed_min)
    out_lengths = P._resampled_lengths(n, params[:, 7]).clamp_max(out_len)
    table = P.layout_table(spec)
    fn = lambda: torch.ops.slpfast.augment_pose(  # noqa: E731
        x, c, n, out_lengths, out_len, params, ids, seed, table, cfg.elem_config(), normalize, 0.0)
    return fn, out_len


def main(argv=None):
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--C", type=int, default=3, choices=[2, 3])
    p.add_argument("--workloads", type=name_list(WORKLOADS), default=",".join(WORKLOADS), metavar="NAMES",
                   help="comma-separated subset of %(default)s (default: all)")
    p.add_argument("--devices", type=name_list(DEVICES), default=",".join(DEVICES), metavar="NAMES",
                   help="where to run, comma-separated: cpu (ext-cpu, torch-chain, the per-clip loops) and/or "
                        "cuda (if present; default: both)")
    p.add_argument("--gpu-batches", type=int_list(1, allow_empty=True), default=None, metavar="B,...",
                   help="GPU only: extra batch sizes >= 1 for ext-cuda-op, comma-separated, '' for none "
                        "(default 1024,4096; --quick: none)")
    args = p.parse_args(argv)
    B, lo, hi = (32, 16, 64) if args.quick else (256, 32, 256)
    reps = args.repeats or (3 if args.quick else 5)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    pose, conf, lengths = make_batch(B, lo, hi, args.C, dtype)
    ids, seed = torch.arange(B) + 1000, 17
    spec = R.canonical_spec()
    pose_np, conf_np, len_list = pose.numpy(), conf.numpy(), lengths.tolist()
    res = Results("pose", args.json, quick=args.quick)
    shape = f"B={B} T~U({lo},{hi}) J={layouts.NUM_JOINTS} C={args.C} {args.dtype}"
    print(f"# {shape}, torch threads={torch.get_num_threads()}")
    if not HAVE_POSE_FORMAT:
        print("# pose-format is not installed: that provider is skipped")
    wanted = args.devices
    cuda_ok = torch.cuda.is_available() and not P._extension.unavailable_reasons("cuda")
    devices = [d for d in ("cpu", "cuda") if d in wanted and (d == "cpu" or cuda_ok)]
    if not devices:
        p.error(f"argument --devices: nothing to run on {','.join(args.devices)} (CUDA usable: {cuda_ok})")
    copy_gbs = copy_bandwidth("cuda") if "cuda" in devices else None
    for wl in args.workloads:
        cfg = WORKLOADS[wl]
        out_len = R.resampled_length(pose.shape[1], cfg.speed_min)
        nbytes = bytes_moved(lengths, (B, out_len), args.C, pose.element_size())
        noise = dict(jitter_std=cfg.jitter_std, joint_drop_p=cfg.joint_drop_p, frame_drop_p=cfg.frame_drop_p)
        timings, cpu_ms = {}, {}
        for dev in devices:
            x, c, n, i = pose.to(dev), conf.to(dev), lengths.to(dev), ids.to(dev)
            layout = ChainLayout(spec, dev)
            params = P.sample_augment_params(i, seed, cfg)
            ext = lambda: P.augment_pose(x, c, n, seed=seed, clip_ids=i, config=cfg, normalize=True)  # noqa: E731
            chain = lambda: normalize_augment_chain(x, c, n, params, out_len, layout, **noise)  # noqa: E731
            if wl == "affine":  # the chain is a faithful provider: check it against the op first
                got, want = chain(), ext()
                torch.testing.assert_close(got[0].float(), want[0].float(), rtol=2e-3, atol=2e-3)
            if dev == "cuda":
                op = raw_augment(x, c, n, i, seed, cfg, spec)[0]
                timings["ext-cuda-op"] = {**gpu_time(op), **op_times(op, dev)}  # which kernel sets the pace
                timings["ext-cuda"] = gpu_time(ext)
                # lengths and clip ids on the host, as the trainer passes them: nothing read back
                timings["ext-cuda-host-lengths"] = gpu_time(
                    lambda: P.augment_pose(x, c, lengths, seed=seed, clip_ids=ids, config=cfg, normalize=True))
                timings["torch-chain-cuda"] = gpu_time(chain)
                continue
            timings["ext-cpu"] = measure(ext, device=dev, repeats=reps)
            timings["torch-chain"] = measure(chain, device=dev, repeats=reps)
            if dev == "cpu":
                cpu_ms["ext-cpu"] = cpu_time_ms(ext, reps)
                cpu_ms["torch-chain"] = cpu_time_ms(chain, max(2, reps // 2))
        if "cpu" in devices:  # the per-clip loops (CPU only, seconds per call at B=256)
            ref_loop = lambda: reference_loop(pose_np, conf_np, len_list, ids, seed, cfg, spec)  # noqa: E731
            timings["reference"] = measure(ref_loop, warmup=1, repeats=max(2, reps // 2))
            cpu_ms["reference"] = cpu_time_ms(ref_loop, 2)
        if wl == "affine" and HAVE_POSE_FORMAT and "cpu" in devices:
            rng = np.random.default_rng(0)
            pf_loop = lambda: pose_format_loop(pose_np, conf_np, len_list, rng)  # noqa: E731
            timings["pose-format"] = measure(pf_loop, warmup=1, repeats=max(2, reps // 2))
            cpu_ms["pose-format"] = cpu_time_ms(pf_loop, max(2, reps // 2))
        pf = timings.get("pose-format", {}).get("median_ms")
        pf_cpu = cpu_ms.get("pose-format")
        for name, t in timings.items():
            ms = t["median_ms"]
            gbs = nbytes / (ms * 1e-3) / 1e9
            row = dict(workload=wl, shape=shape, provider=name, median_ms=ms, p20_ms=t["p20_ms"], p80_ms=t["p80_ms"],
                       clips_per_s=B / (ms * 1e-3), gb_per_s=gbs, vs_pf=(pf / ms) if pf else None,
                       cpu_ms=cpu_ms.get(name),
                       vs_pf_cpu=(pf_cpu / cpu_ms[name]) if (pf_cpu and name in cpu_ms) else None,
                       pct_copy_bw=(100 * gbs / copy_gbs) if (copy_gbs and "cuda" in name) else None,
                       **{k: t[k] for k in ("device_ms", "kernels_us") if k in t})
            res.add(**row)
    if "cuda" in devices:
        gpu_scaling(args, res, copy_gbs, spec, seed)
    if copy_gbs:
        print(f"# device copy bandwidth: {copy_gbs:.0f} GB/s")
    res.print_table(["workload", "shape", "provider", "median_ms", "p20_ms", "p80_ms", "clips_per_s", "gb_per_s", "vs_pf",
                     "cpu_ms", "vs_pf_cpu", "pct_copy_bw", "device_ms"])


def gpu_scaling(args, res, copy_gbs, spec, seed) -> None:
    """ext-cuda-op at larger batches: the same op once launch latency no longer dominates."""
    batches = args.gpu_batches if args.gpu_batches is not None else ([] if args.quick else [1024, 4096])
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    for B in batches:
        pose, conf, lengths = make_batch(B, 32, 256, args.C, dtype, seed=1)
        x, c, n, i = pose.cuda(), conf.cuda(), lengths.cuda(), (torch.arange(B) + 1000).cuda()
        shape = f"B={B} T~U(32,256) J={layouts.NUM_JOINTS} C={args.C} {args.dtype}"
        # the op without the fused normalization too: what the normalize stage costs (an ablation)
        for wl, normalize in [(w, True) for w in args.workloads] + [("affine", False)]:
            fn, out_len = raw_augment(x, c, n, i, seed, WORKLOADS[wl], spec, normalize=normalize)
            t = gpu_time(fn)
            gbs = bytes_moved(lengths, (B, out_len), args.C, pose.element_size()) / (t["median_ms"] * 1e-3) / 1e9
            res.add(workload=wl, shape=shape, provider="ext-cuda-op" + ("" if normalize else "-no-normalize"),
                    median_ms=t["median_ms"], p20_ms=t["p20_ms"], p80_ms=t["p80_ms"],
                    clips_per_s=B / (t["median_ms"] * 1e-3), gb_per_s=gbs, pct_copy_bw=100 * gbs / copy_gbs)
        del x, c, n, i
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
