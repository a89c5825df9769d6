// Torch-free entry points of the pose ops (normalization, parameter sampling, augmentation)
// over raw pointers. CPU versions work on a sub-range of clips [b0, b1) so that callers can
// parallelise over the batch; CUDA versions launch on the given stream.
//
// Data: pose (rows, J, C) float32 or float16 (stored as uint16_t, `half` = true), C in {2, 3};
// conf (rows, J) float32; clips located by `Seqs` (padded or packed, see pose_math.h).
// The math lives in pose_math.h / pose_augment.h and is shared by both devices.
#pragma once

#include <cstdint>

#include "pose_augment.h"

namespace slpfast {
namespace pose {

struct NormalizeArgs {
  const void* pose;
  const float* conf;
  void* out_pose;
  float* out_conf;
  Seqs seqs;       // input and output share the layout
  int64_t batch;
  int C;
  bool half;
  double thr;      // joints with conf <= thr are invalid
  Layout layout;
  double* info;    // optional (B, 5): centre x, y, z (0 when C = 2), scale, fallback code
};

struct AugmentArgs {
  const void* pose;
  const float* conf;
  void* out_pose;
  float* out_conf;
  Seqs in, out;             // out lengths come from the params' speed (resampled_length)
  int64_t batch;
  int C;
  bool half;
  const double* params;     // (B, kNumParams)
  const int64_t* clip_ids;  // (B,)
  uint64_t seed;
  ElemConfig elem;
  bool normalize;           // apply normalize_pose to the source first (fused)
  double thr;
  Layout layout;
};

// Returns nullptr when the host layout table (kHeader + 4 J int32) is consistent, else why not.
const char* check_layout(const int32_t* table, int64_t numel);

void normalize_cpu(const NormalizeArgs& a, int64_t b0, int64_t b1);
void sample_params_cpu(const int64_t* clip_ids, int64_t b0, int64_t b1, uint64_t seed, const double* sample_cfg,
                       int num_parts, double* params);
void augment_cpu(const AugmentArgs& a, int64_t b0, int64_t b1);

// Bytes of device workspace the CUDA launchers need for `batch` clips.
int64_t cuda_workspace_bytes(int64_t batch);

#ifdef SLPFAST_WITH_CUDA_DECLS
// Pointers are device pointers (the layout tables too), `stream` is a cudaStream_t;
// `sample_cfg` is host memory; `rows` is the number of rows of the (output) array, `in_rows`
// that of augment's input, known from the tensor shapes (no device sync). Lengths and
// cu_seqlens are not checked (they are in device memory): the kernels clamp every clip to
// these rows, so bad values give wrong output but no access outside the arrays.
// Return a cudaError_t as int (0 on success).
int normalize_cuda_rows(const NormalizeArgs& a, int64_t rows, void* workspace, void* stream);
int sample_params_cuda(const int64_t* clip_ids, int64_t batch, uint64_t seed, const double* sample_cfg,
                       int num_parts, double* params, void* stream);
int augment_cuda_rows(const AugmentArgs& a, int64_t in_rows, int64_t rows, void* workspace, void* stream);
#endif

}  // namespace pose
}  // namespace slpfast
