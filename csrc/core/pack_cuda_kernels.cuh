// The CUDA kernels of pack/unpack (launched by pack_cuda.cu), in a header of their own so that
// tests/cpp/test_pack_cuda_emulated.cpp can compile these same bodies as host code (see
// tests/cpp/cuda_emulation.h). Threads stride over (padded row, feature) pairs so consecutive
// threads touch consecutive addresses.
//
// cu_seqlens live in device memory and are not checked by the bindings (reading them back is a
// device->host sync): a raw-op call may pass any values. Each sequence is clamped to the
// packed array's `packed_rows` rows (seq_rows), so bad values give wrong output, never an
// access outside the tensors; valid values are unchanged.
#pragma once

#include <cstdint>

namespace slpfast {
namespace pack_kernels {

// Packed rows [*start, *start + *len) of sequence b, inside [0, packed_rows). No subtraction
// of two unchecked values (it can overflow).
__device__ __forceinline__ void seq_rows(const int64_t* cu, int64_t b, int64_t packed_rows, int64_t* start,
                                         int64_t* len) {
  int64_t lo = cu[b], hi = cu[b + 1];
  lo = lo < 0 ? 0 : (lo > packed_rows ? packed_rows : lo);
  hi = hi < lo ? lo : (hi > packed_rows ? packed_rows : hi);
  *start = lo;
  *len = hi - lo;
}

// Packed element of padded element i = (b, t, f) of a (batch, max_len, features) array, or -1
// when row t is past sequence b's rows (padding).
__device__ __forceinline__ int64_t packed_index(const int64_t* cu, int64_t i, int64_t max_len, int64_t features,
                                                int64_t packed_rows) {
  const int64_t f = i % features;
  const int64_t t = (i / features) % max_len;
  const int64_t b = i / (features * max_len);
  int64_t start, len;
  seq_rows(cu, b, packed_rows, &start, &len);
  return t < len ? (start + t) * features + f : -1;
}

template <typename Word>
__global__ void pack_kernel(const Word* __restrict__ padded, Word* __restrict__ packed,
                            const int64_t* __restrict__ cu, int64_t batch, int64_t max_len,
                            int64_t features, int64_t packed_rows) {
  const int64_t total = batch * max_len * features;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = packed_index(cu, i, max_len, features, packed_rows);
    if (p >= 0) packed[p] = padded[i];
  }
}

template <typename Word>
__global__ void unpack_kernel(const Word* __restrict__ packed, Word* __restrict__ padded,
                              const int64_t* __restrict__ cu, int64_t batch, int64_t max_len,
                              int64_t features, int64_t packed_rows) {
  const int64_t total = batch * max_len * features;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = packed_index(cu, i, max_len, features, packed_rows);
    padded[i] = p >= 0 ? packed[p] : Word(0);
  }
}

}  // namespace pack_kernels
}  // namespace slpfast
