// CUDA implementation of the pack/unpack declarations in csrc/core/pack.h.
// Torch-free: raw device pointers and a stream. One kernel launch per call; threads stride
// over (padded row, feature) pairs so consecutive threads touch consecutive addresses.
#define SLPFAST_WITH_CUDA_DECLS
#include "pack.h"

#include <cuda_runtime.h>

namespace slpfast {
namespace {

template <typename Word>
__global__ void pack_kernel(const Word* __restrict__ padded, Word* __restrict__ packed,
                            const int64_t* __restrict__ cu, int64_t batch, int64_t max_len,
                            int64_t features) {
  const int64_t total = batch * max_len * features;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t f = i % features;
    const int64_t t = (i / features) % max_len;
    const int64_t b = i / (features * max_len);
    const int64_t start = cu[b];
    if (t < cu[b + 1] - start) packed[(start + t) * features + f] = padded[i];
  }
}

template <typename Word>
__global__ void unpack_kernel(const Word* __restrict__ packed, Word* __restrict__ padded,
                              const int64_t* __restrict__ cu, int64_t batch, int64_t max_len,
                              int64_t features) {
  const int64_t total = batch * max_len * features;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t f = i % features;
    const int64_t t = (i / features) % max_len;
    const int64_t b = i / (features * max_len);
    const int64_t start = cu[b];
    padded[i] = (t < cu[b + 1] - start) ? packed[(start + t) * features + f] : Word(0);
  }
}

int grid_for(int64_t total, int threads) {
  int64_t blocks = (total + threads - 1) / threads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  return blocks < 1 ? 1 : static_cast<int>(blocks);
}


template <typename Word, bool kPack>
int launch(const void* src, void* dst, const int64_t* cu, int64_t batch, int64_t max_len,
           int64_t features, void* stream) {
  const int64_t total = batch * max_len * features;
  if (total == 0) return 0;
  constexpr int kThreads = 256;
  auto s = static_cast<cudaStream_t>(stream);
  if (kPack) {
    pack_kernel<Word><<<grid_for(total, kThreads), kThreads, 0, s>>>(
        static_cast<const Word*>(src), static_cast<Word*>(dst), cu, batch, max_len, features);
  } else {
    unpack_kernel<Word><<<grid_for(total, kThreads), kThreads, 0, s>>>(
        static_cast<const Word*>(src), static_cast<Word*>(dst), cu, batch, max_len, features);
  }
  return static_cast<int>(cudaGetLastError());
}

template <bool kPack>
int dispatch(const void* src, void* dst, const int64_t* cu, int64_t batch, int64_t max_len,
             int64_t features, int64_t elem_size, void* stream) {
  switch (elem_size) {
    case 1: return launch<uint8_t, kPack>(src, dst, cu, batch, max_len, features, stream);
    case 2: return launch<uint16_t, kPack>(src, dst, cu, batch, max_len, features, stream);
    case 4: return launch<uint32_t, kPack>(src, dst, cu, batch, max_len, features, stream);
    case 8: return launch<uint64_t, kPack>(src, dst, cu, batch, max_len, features, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace

int pack_padded_cuda(const void* padded, void* packed, const int64_t* cu, int64_t batch,
                     int64_t max_len, int64_t features, int64_t elem_size, void* stream) {
  return dispatch<true>(padded, packed, cu, batch, max_len, features, elem_size, stream);
}

int unpack_packed_cuda(const void* packed, void* padded, const int64_t* cu, int64_t batch,
                       int64_t max_len, int64_t features, int64_t elem_size, void* stream) {
  return dispatch<false>(packed, padded, cu, batch, max_len, features, elem_size, stream);
}

}  // namespace slpfast
