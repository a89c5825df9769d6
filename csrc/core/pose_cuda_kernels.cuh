// The CUDA kernels of the pose ops (launched by pose_cuda.cu), in a header of their own so that
// tests/cpp/test_pose_cuda_emulated.cpp can compile these same bodies as host code (with
// threadIdx / blockIdx / __syncthreads emulated, tests/cpp/cuda_emulation.h) and compare them
// with the CPU implementation on a machine without a GPU. Device-only code here must therefore
// stay within what that emulation provides: no intrinsics outside the SLP_HD helpers of
// pose_math.h (which have host fallbacks), no atomics, no warp shuffles.
#pragma once
#include "pose_api.h"

namespace slpfast {
namespace pose {
namespace cuda_kernels {

constexpr int kPlanThreads = 128;

// Threads per row block: J rounded up to whole warps (128 for the canonical J=123), at most
// 256 (a wider layout loops over its joints).
inline int row_threads(int J) {
  const int t = (J + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 256 ? 256 : t);
}

// Row blocks to launch (the kernels stride over the rest).
inline unsigned row_grid(int64_t rows) { return static_cast<unsigned>(rows < (1 << 30) ? rows : (1 << 30)); }

// Clip owning output row `row` (binary search over cu_seqlens for packed data).
__device__ __forceinline__ int64_t clip_of_row(const Seqs& s, int64_t batch, int64_t row) {
  if (s.cap >= 0) return s.cap > 0 ? row / s.cap : 0;
  int64_t lo = 0, hi = batch - 1;  // largest b with cu[b] <= row
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (s.seq[mid] <= row) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Rows [*start, *start + *len) of clip b (b < batch) in an array of `rows` rows, and the rows it
// owns (*owned: padded cap, packed len). The CUDA bindings do not read lengths / cu_seqlens back
// to the host (a device->host sync), so values that a raw-op caller passes unchecked (a length
// past the padded capacity or negative, cu_seqlens out of order or past the array) are clamped
// here to rows inside the array: garbage out, but no thread reads or writes outside the
// tensors. Valid values are unchanged. No subtraction of two unchecked values (it can overflow).
__device__ __forceinline__ void clip_rows(const Seqs& s, int64_t b, int64_t rows, int64_t* start, int64_t* len,
                                          int64_t* owned) {
  if (s.cap >= 0) {  // rows = batch * cap: the clip's own rows are always inside
    const int64_t n = s.seq[b];
    *start = b * s.cap;
    *len = n < 0 ? 0 : (n > s.cap ? s.cap : n);
    *owned = s.cap;
    return;
  }
  int64_t lo = s.seq[b], hi = s.seq[b + 1];
  lo = lo < 0 ? 0 : (lo > rows ? rows : lo);
  hi = hi < lo ? lo : (hi > rows ? rows : hi);
  *start = lo;
  *len = *owned = hi - lo;
}

// Tree reduction of per-thread accumulators in shared memory (deterministic order).
template <typename Acc, typename Merge>
__device__ void block_reduce(Acc* sh, Merge merge) {
  for (int stride = kPlanThreads / 2; stride > 0; stride /= 2) {
    __syncthreads();
    if (threadIdx.x < stride) merge(&sh[threadIdx.x], sh[threadIdx.x + stride]);
  }
  __syncthreads();
}

// `in_rows` / `out_rows`: rows of the input and output arrays (the bounds of clip_rows).
template <typename T>
__global__ void plan_kernel(const T* __restrict__ pose, const float* __restrict__ conf, Seqs in, int64_t in_rows,
                            Seqs out, int64_t out_rows, Layout L, int C, double thr, bool normalize,
                            const double* __restrict__ params, const int64_t* __restrict__ clip_ids,
                            ClipPlan* __restrict__ plans, double* __restrict__ info) {
  __shared__ StatsAcc sh_stats[kPlanThreads];
  __shared__ BoxAcc sh_box[kPlanThreads];
  const int64_t b = blockIdx.x;
  int64_t start, len, in_owned;
  clip_rows(in, b, in_rows, &start, &len, &in_owned);
  ClipNorm norm;
  if (normalize) {
    StatsAcc acc;
    stats_zero(&acc);
    for (int64_t t = threadIdx.x; t < len; t += kPlanThreads) stats_add_frame(&acc, L, pose, conf, start + t, C, thr);
    sh_stats[threadIdx.x] = acc;
    block_reduce(sh_stats, [](StatsAcc* x, const StatsAcc& y) { stats_merge(x, y); });
    const StatsAcc total = sh_stats[0];
    if (needs_box(total)) {  // uniform across the block: every thread reads the same total
      BoxAcc box;
      box_zero(&box);
      for (int64_t e = threadIdx.x; e < len * L.J; e += kPlanThreads)
        box_add_joint(&box, pose, conf, start + e / L.J, static_cast<int>(e % L.J), L.J, C, thr);
      sh_box[threadIdx.x] = box;
      block_reduce(sh_box, [](BoxAcc* x, const BoxAcc& y) { box_merge(x, y); });
      norm = finalize_norm(total, &sh_box[0], C);
    } else {
      norm = finalize_norm(total, nullptr, C);
    }
  }
  if (threadIdx.x != 0) return;
  ClipPlan P;
  if (normalize) P.norm = norm;
  P.in_start = start;
  P.in_len = len;
  if (params != nullptr) {
    clip_rows(out, b, out_rows, &P.out_start, &P.out_len, &P.out_rows);
    P.clip_id = static_cast<uint64_t>(clip_ids[b]);
    plan_affine(&P, params + b * kNumParams);
  }
  plans[b] = P;
  if (info != nullptr && normalize) {
    double* row = info + b * 5;
    for (int k = 0; k < 3; ++k) row[k] = norm.centre[k];
    row[3] = 1.0 / norm.inv_scale;
    row[4] = static_cast<double>(norm.fallback);
  }
}

// The element kernels take C (2 or 3) as a template parameter: with a compile-time C the
// per-joint double[kMaxC] arrays of the shared math live in registers. With C a runtime int
// they lived in local memory (ptxas: 128-160 bytes of stack frame per thread), memory traffic
// on top of the pose itself.
template <typename T, int C>
__global__ void normalize_kernel(const T* __restrict__ pose, const float* __restrict__ conf, T* __restrict__ out,
                                 float* __restrict__ out_conf, Seqs s, int64_t batch, int64_t rows, Layout L,
                                 double thr, const ClipPlan* __restrict__ plans) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const ClipPlan& P = plans[clip_of_row(s, batch, row)];
    const bool valid = row >= P.in_start && row - P.in_start < P.in_len;
    for (int j = threadIdx.x; j < L.J; j += blockDim.x) {
      const int64_t k = row * L.J + j;
      if (valid) {
        out_conf[k] = normalize_joint_out(L, P.norm, pose, conf, row, j, C, thr, out);
      } else {
        for (int c = 0; c < C; ++c) store(out, k * C + c, 0.0);
        out_conf[k] = 0.0f;
      }
    }
  }
}

template <typename T, bool kNormalize, int C>
__global__ void augment_kernel(const T* __restrict__ pose, const float* __restrict__ conf, T* __restrict__ out,
                               float* __restrict__ out_conf, Seqs s_out, int64_t batch, int64_t rows, Layout L,
                               double thr, ElemConfig E, uint64_t seed, const ClipPlan* __restrict__ plans) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const ClipPlan& P = plans[clip_of_row(s_out, batch, row)];
    for (int j = threadIdx.x; j < L.J; j += blockDim.x) {
      const int64_t k = row * L.J + j;
      out_conf[k] = augment_joint<T, kNormalize>(L, P, E, seed, pose, conf, row - P.out_start, j, C, thr, out,
                                                 k * C);
    }
  }
}

// Grid-stride: grid_for caps the grid, so a batch past 65535 * 16 blocks of threads loops.
__global__ void sample_kernel(const int64_t* __restrict__ clip_ids, int64_t batch, uint64_t seed, SampleConfig cfg,
                              int num_parts, double* __restrict__ params) {
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < batch; b += (int64_t)gridDim.x * blockDim.x)
    sample_params(cfg, num_parts, seed, static_cast<uint64_t>(clip_ids[b]), params + b * kNumParams);
}

inline int grid_for(int64_t total, int threads) {
  int64_t blocks = (total + threads - 1) / threads;
  if (blocks > 65535LL * 16) blocks = 65535LL * 16;
  return blocks < 1 ? 1 : static_cast<int>(blocks);
}

}  // namespace cuda_kernels
}  // namespace pose
}  // namespace slpfast
