// The CUDA pack/unpack kernels (csrc/core/pack_cuda_kernels.cuh) run as host code under
// tests/cpp/cuda_emulation.h and compared with the CPU core (pack.h); then with cu_seqlens that
// the CUDA bindings cannot check (device memory): every access stays inside the arrays, which
// sit against inaccessible pages so that one outside crashes the test in any build.

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "check.h"
#include "cuda_emulation.h"  // before the kernels: defines __global__, threadIdx, ...
#include "guarded_array.h"
#include "pack.h"
#include "pack_cuda_kernels.cuh"

namespace K = slpfast::pack_kernels;


// As pack_cuda.cu launches them, with a small grid so that the grid-stride loops run.
static void emulated_pack(const float* padded, float* packed, const int64_t* cu, int64_t B, int64_t T, int64_t F,
                          int64_t rows) {
  launch_serial(3, 32, [&] { K::pack_kernel<float>(padded, packed, cu, B, T, F, rows); });
}
static void emulated_unpack(const float* packed, float* padded, const int64_t* cu, int64_t B, int64_t T, int64_t F,
                            int64_t rows) {
  launch_serial(3, 32, [&] { K::unpack_kernel<float>(packed, padded, cu, B, T, F, rows); });
}

static void test_matches_cpu() {
  const int64_t B = 4, T = 5, F = 3;
  const std::vector<int64_t> cu = {0, 5, 5, 7, 8};
  std::vector<float> padded(B * T * F);
  for (size_t i = 0; i < padded.size(); ++i) padded[i] = static_cast<float>(i + 1);
  std::vector<float> gpu(cu[B] * F, -1.0f), cpu(cu[B] * F, -2.0f);
  emulated_pack(padded.data(), gpu.data(), cu.data(), B, T, F, cu[B]);
  slpfast::pack_padded_cpu(padded.data(), cpu.data(), cu.data(), B, T, F, sizeof(float));
  CHECK(gpu == cpu);
  std::vector<float> back_gpu(B * T * F, -1.0f), back_cpu(B * T * F, -2.0f);
  emulated_unpack(gpu.data(), back_gpu.data(), cu.data(), B, T, F, cu[B]);
  slpfast::unpack_packed_cpu(cpu.data(), back_cpu.data(), cu.data(), B, T, F, sizeof(float));
  CHECK(back_gpu == back_cpu);
}

// cu_seqlens that the bindings would refuse on the CPU: out of order, past the rows, negative,
// differences that overflow, lengths past max_len. Before the clamp, pack wrote and unpack
// read outside the packed array.
static void run_unchecked(const std::vector<int64_t>& cu_values, int64_t T, int64_t rows, bool at_end) {
  const int64_t B = static_cast<int64_t>(cu_values.size()) - 1, F = 3;
  GuardedArray<int64_t> cu(cu_values.size(), at_end, 0);
  std::copy(cu_values.begin(), cu_values.end(), cu.data);
  GuardedArray<float> padded(B * T * F, at_end, 1.0f), packed(rows * F, at_end, 2.0f);
  emulated_pack(padded.data, packed.data, cu.data, B, T, F, rows);
  GuardedArray<float> back(B * T * F, at_end, -1.0f);
  emulated_unpack(packed.data, back.data, cu.data, B, T, F, rows);
  for (int64_t i = 0; i < B * T * F; ++i) CHECK(back.data[i] == 0.0f || back.data[i] == 1.0f || back.data[i] == 2.0f);
}

static void test_unchecked_cu_seqlens_stay_inside_the_arrays() {
  for (bool at_end : {true, false}) {
    run_unchecked({0, 5, 3, 40, 6}, 4, 6, at_end);
    run_unchecked({-7, 3, -2, 8}, 5, 8, at_end);
    run_unchecked({0, INT64_MAX, -2, 8}, 4, 8, at_end);
    run_unchecked({INT64_MAX, INT64_MIN, INT64_MAX}, 2, 3, at_end);
    run_unchecked({3, 9}, 4, 2, at_end);
  }
}

int main() {
  test_matches_cpu();
  test_unchecked_cu_seqlens_stay_inside_the_arrays();
  TEST_MAIN_END();
}
