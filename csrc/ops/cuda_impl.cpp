// CUDA implementations of the torch.ops.slpfast ops: argument checks and allocation here,
// the kernels themselves in the torch-free csrc/core/*.cu. Compiled only when the extension
// is built with CUDA (SLPFAST_WITH_CUDA).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#define SLPFAST_WITH_CUDA_DECLS
#include "../core/pack.h"
#include "checks.h"

namespace slpfast {
namespace {

void check_launch(const char* op, int status) {
  TORCH_CHECK(status == 0, op, ": CUDA kernel launch failed with cudaError ", status);
}

// cu_seqlens values are not re-validated here (that would need a device->host sync); the
// Python wrapper validates lengths on the host before they reach the device, so here we
// only check shapes.
at::Tensor pack_padded_cuda_op(const at::Tensor& padded, const at::Tensor& cu_seqlens, int64_t total) {
  check_pack_args("pack_padded", padded, cu_seqlens, 2);
  const c10::cuda::CUDAGuard guard(padded.device());
  const auto x = padded.contiguous();
  const auto cu = cu_seqlens.contiguous();
  const int64_t batch = cu.size(0) - 1, max_len = x.size(1);
  TORCH_CHECK(x.size(0) == batch, "pack_padded: padded has ", x.size(0),
              " sequences but cu_seqlens describes ", batch);
  TORCH_CHECK(total >= 0, "pack_padded: total must be >= 0, got ", total);
  auto sizes = x.sizes().vec();
  sizes.erase(sizes.begin());
  sizes[0] = total;
  auto out = at::empty(sizes, x.options());
  check_launch("pack_padded",
               pack_padded_cuda(x.data_ptr(), out.data_ptr(), cu.data_ptr<int64_t>(), batch, max_len,
                                row_features(x, 2), x.element_size(),
                                c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

at::Tensor unpack_packed_cuda_op(const at::Tensor& packed, const at::Tensor& cu_seqlens, int64_t max_len) {
  check_pack_args("unpack_packed", packed, cu_seqlens, 1);
  TORCH_CHECK(max_len >= 0, "unpack_packed: max_len must be >= 0, got ", max_len);
  const c10::cuda::CUDAGuard guard(packed.device());
  const auto x = packed.contiguous();
  const auto cu = cu_seqlens.contiguous();
  const int64_t batch = cu.size(0) - 1;
  auto sizes = x.sizes().vec();
  sizes[0] = max_len;
  sizes.insert(sizes.begin(), batch);
  auto out = at::empty(sizes, x.options());
  check_launch("unpack_packed",
               unpack_packed_cuda(x.data_ptr(), out.data_ptr(), cu.data_ptr<int64_t>(), batch, max_len,
                                  row_features(x, 1), x.element_size(),
                                  c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

}  // namespace
}  // namespace slpfast

TORCH_LIBRARY_IMPL(slpfast, CUDA, m) {
  m.impl("pack_padded", &slpfast::pack_padded_cuda_op);
  m.impl("unpack_packed", &slpfast::unpack_packed_cuda_op);
}
