// CUDA implementation of the pose ops declared in csrc/core/pose_api.h. Torch-free: raw
// device pointers and a stream.
//
// Two launches per op:
//   1. plan_kernel, one block per clip: reduces the clip's shoulder / scale-pair sums (and the
//      bounding box when the shoulders are never visible) in double with a fixed-order tree,
//      then thread 0 writes the clip's ClipPlan (normalization + affine) to the workspace.
//      It reads only the anchor joints of each frame, a few percent of the data.
//   2. one fused element kernel over every output joint: one block per output row (frame),
//      one thread per joint, so a warp reads and writes consecutive joints (coalesced), the
//      clip lookup and its plan are shared by the block, and no thread divides a flat index by
//      J. Each thread applies resampling, flip, affine, jitter and dropout (or normalization)
//      with the same SLP_HD functions as the CPU loops.
#define SLPFAST_WITH_CUDA_DECLS
#include "pose_api.h"
#include "pose_cuda_kernels.cuh"

#include <cuda_runtime.h>

namespace slpfast {
namespace pose {
namespace {

using namespace cuda_kernels;

// Rows of an array described by `s` (padded: B * cap; packed: cu[B], read on the host side
// by the caller and passed in through `rows`).
template <typename T>
int normalize_impl(const NormalizeArgs& a, int64_t rows, ClipPlan* plans, cudaStream_t st) {
  const T* pose = static_cast<const T*>(a.pose);
  plan_kernel<T><<<static_cast<unsigned>(a.batch), kPlanThreads, 0, st>>>(
      pose, a.conf, a.seqs, rows, a.seqs, rows, a.layout, a.C, a.thr, true, nullptr, nullptr, plans, a.info);
  if (rows > 0) {
    const unsigned grid = row_grid(rows);
    const int threads = row_threads(a.layout.J);
    T* out = static_cast<T*>(a.out_pose);
    if (a.C == 2)
      normalize_kernel<T, 2><<<grid, threads, 0, st>>>(pose, a.conf, out, a.out_conf, a.seqs, a.batch, rows,
                                                       a.layout, a.thr, plans);
    else
      normalize_kernel<T, 3><<<grid, threads, 0, st>>>(pose, a.conf, out, a.out_conf, a.seqs, a.batch, rows,
                                                       a.layout, a.thr, plans);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int augment_impl(const AugmentArgs& a, int64_t in_rows, int64_t rows, ClipPlan* plans, cudaStream_t st) {
  const T* pose = static_cast<const T*>(a.pose);
  plan_kernel<T><<<static_cast<unsigned>(a.batch), kPlanThreads, 0, st>>>(
      pose, a.conf, a.in, in_rows, a.out, rows, a.layout, a.C, a.thr, a.normalize, a.params, a.clip_ids, plans,
      nullptr);
  if (rows > 0) {
    const unsigned grid = row_grid(rows);
    const int threads = row_threads(a.layout.J);
    T* out = static_cast<T*>(a.out_pose);
    // (normalize, C) -> one instantiation each; C is 2 or 3 (checked by the bindings)
    if (a.normalize && a.C == 2)
      augment_kernel<T, true, 2><<<grid, threads, 0, st>>>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows,
                                                           a.layout, a.thr, a.elem, a.seed, plans);
    else if (a.normalize)
      augment_kernel<T, true, 3><<<grid, threads, 0, st>>>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows,
                                                           a.layout, a.thr, a.elem, a.seed, plans);
    else if (a.C == 2)
      augment_kernel<T, false, 2><<<grid, threads, 0, st>>>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows,
                                                            a.layout, a.thr, a.elem, a.seed, plans);
    else
      augment_kernel<T, false, 3><<<grid, threads, 0, st>>>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows,
                                                            a.layout, a.thr, a.elem, a.seed, plans);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

// `rows` of the arrays: the binding knows them from the tensor shapes (no device sync).
int normalize_cuda_rows(const NormalizeArgs& a, int64_t rows, void* workspace, void* stream) {
  if (a.batch == 0) return 0;
  auto* plans = static_cast<ClipPlan*>(workspace);
  auto st = static_cast<cudaStream_t>(stream);
  return a.half ? normalize_impl<uint16_t>(a, rows, plans, st) : normalize_impl<float>(a, rows, plans, st);
}

int augment_cuda_rows(const AugmentArgs& a, int64_t in_rows, int64_t rows, void* workspace, void* stream) {
  if (a.batch == 0) return 0;
  auto* plans = static_cast<ClipPlan*>(workspace);
  auto st = static_cast<cudaStream_t>(stream);
  return a.half ? augment_impl<uint16_t>(a, in_rows, rows, plans, st) : augment_impl<float>(a, in_rows, rows, plans, st);
}

int sample_params_cuda(const int64_t* clip_ids, int64_t batch, uint64_t seed, const double* sample_cfg,
                       int num_parts, double* params, void* stream) {
  if (batch == 0) return 0;
  const SampleConfig cfg = make_sample_config(sample_cfg);
  sample_kernel<<<grid_for(batch, 128), 128, 0, static_cast<cudaStream_t>(stream)>>>(clip_ids, batch, seed, cfg,
                                                                                      num_parts, params);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace pose
}  // namespace slpfast
