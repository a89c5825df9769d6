// CUDA implementation of the pack/unpack declarations in csrc/core/pack.h.
// Torch-free: raw device pointers and a stream. One kernel launch per call (the kernels are in
// pack_cuda_kernels.cuh).
#define SLPFAST_WITH_CUDA_DECLS
#include "pack.h"
#include "pack_cuda_kernels.cuh"

#include <cuda_runtime.h>

namespace slpfast {
namespace {

using pack_kernels::pack_kernel;
using pack_kernels::unpack_kernel;

int grid_for(int64_t total, int threads) {
  int64_t blocks = (total + threads - 1) / threads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  return blocks < 1 ? 1 : static_cast<int>(blocks);
}


template <typename Word, bool kPack>
int launch(const void* src, void* dst, const int64_t* cu, int64_t batch, int64_t max_len,
           int64_t features, int64_t packed_rows, void* stream) {
  const int64_t total = batch * max_len * features;
  if (total == 0) return 0;
  constexpr int kThreads = 256;
  auto s = static_cast<cudaStream_t>(stream);
  if (kPack) {
    pack_kernel<Word><<<grid_for(total, kThreads), kThreads, 0, s>>>(
        static_cast<const Word*>(src), static_cast<Word*>(dst), cu, batch, max_len, features, packed_rows);
  } else {
    unpack_kernel<Word><<<grid_for(total, kThreads), kThreads, 0, s>>>(
        static_cast<const Word*>(src), static_cast<Word*>(dst), cu, batch, max_len, features, packed_rows);
  }
  return static_cast<int>(cudaGetLastError());
}

template <bool kPack>
int dispatch(const void* src, void* dst, const int64_t* cu, int64_t batch, int64_t max_len,
             int64_t features, int64_t elem_size, int64_t packed_rows, void* stream) {
  switch (elem_size) {
    case 1: return launch<uint8_t, kPack>(src, dst, cu, batch, max_len, features, packed_rows, stream);
    case 2: return launch<uint16_t, kPack>(src, dst, cu, batch, max_len, features, packed_rows, stream);
    case 4: return launch<uint32_t, kPack>(src, dst, cu, batch, max_len, features, packed_rows, stream);
    case 8: return launch<uint64_t, kPack>(src, dst, cu, batch, max_len, features, packed_rows, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace

int pack_padded_cuda(const void* padded, void* packed, const int64_t* cu, int64_t batch,
                     int64_t max_len, int64_t features, int64_t elem_size, int64_t packed_rows, void* stream) {
  return dispatch<true>(padded, packed, cu, batch, max_len, features, elem_size, packed_rows, stream);
}

int unpack_packed_cuda(const void* packed, void* padded, const int64_t* cu, int64_t batch,
                       int64_t max_len, int64_t features, int64_t elem_size, int64_t packed_rows, void* stream) {
  return dispatch<false>(packed, padded, cu, batch, max_len, features, elem_size, packed_rows, stream);
}

}  // namespace slpfast
