// Shared argument checks for the torch bindings (CPU and CUDA), so both devices reject bad
// input with the same messages.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

namespace slpfast {

inline int64_t row_features(const at::Tensor& t, int64_t leading) {
  int64_t f = 1;
  for (int64_t d = leading; d < t.dim(); ++d) f *= t.size(d);
  return f;
}

inline void check_pack_args(const char* op, const at::Tensor& data, const at::Tensor& cu,
                            int64_t min_dim) {
  TORCH_CHECK(data.dim() >= min_dim, op, ": input must have at least ", min_dim, " dims, got ",
              data.dim());
  TORCH_CHECK(cu.dim() == 1 && cu.size(0) >= 1, op, ": cu_seqlens must be 1-D of shape (B+1,), got ",
              cu.sizes());
  TORCH_CHECK(cu.scalar_type() == at::kLong, op, ": cu_seqlens must be int64, got ", cu.scalar_type());
  TORCH_CHECK(cu.device() == data.device(), op, ": cu_seqlens is on ", cu.device(),
              " but the input is on ", data.device());
  const auto esize = data.element_size();
  TORCH_CHECK(esize == 1 || esize == 2 || esize == 4 || esize == 8, op,
              ": unsupported element size ", esize);
}

}  // namespace slpfast
