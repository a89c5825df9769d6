// CPU implementations of the torch.ops.slpfast ops: thin wrappers that check arguments,
// allocate outputs and call the torch-free core in csrc/core with at::parallel_for.
#include <ATen/Parallel.h>

#include "../core/pack.h"
#include "checks.h"

namespace slpfast {
namespace {

at::Tensor pack_padded_cpu_op(const at::Tensor& padded, const at::Tensor& cu_seqlens, int64_t total) {
  check_pack_args("pack_padded", padded, cu_seqlens, 2);
  const auto x = padded.contiguous();
  const auto cu = cu_seqlens.contiguous();
  const int64_t batch = cu.size(0) - 1, max_len = x.size(1);
  TORCH_CHECK(x.size(0) == batch, "pack_padded: padded has ", x.size(0),
              " sequences but cu_seqlens describes ", batch);
  const int64_t* cup = cu.data_ptr<int64_t>();
  const char* err = check_cu_seqlens(cup, batch, max_len);
  TORCH_CHECK(err == nullptr, "pack_padded: ", err ? err : "");
  TORCH_CHECK(cup[batch] == total, "pack_padded: total=", total, " but cu_seqlens[-1]=", cup[batch]);
  auto sizes = x.sizes().vec();
  sizes.erase(sizes.begin());
  sizes[0] = total;
  auto out = at::empty(sizes, x.options());
  const int64_t feat = row_features(x, 2), esize = x.element_size();
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
    // Shift the pointers so the core sees a sub-batch starting at sequence b0.
    pack_padded_cpu(src + b0 * max_len * feat * esize, dst, cup + b0, b1 - b0, max_len, feat, esize);
  });
  return out;
}

at::Tensor unpack_packed_cpu_op(const at::Tensor& packed, const at::Tensor& cu_seqlens, int64_t max_len) {
  check_pack_args("unpack_packed", packed, cu_seqlens, 1);
  TORCH_CHECK(max_len >= 0, "unpack_packed: max_len must be >= 0, got ", max_len);
  const auto x = packed.contiguous();
  const auto cu = cu_seqlens.contiguous();
  const int64_t batch = cu.size(0) - 1;
  const int64_t* cup = cu.data_ptr<int64_t>();
  const char* err = check_cu_seqlens(cup, batch, max_len);
  TORCH_CHECK(err == nullptr, "unpack_packed: ", err ? err : "");
  TORCH_CHECK(cup[batch] == x.size(0), "unpack_packed: cu_seqlens[-1]=", cup[batch],
              " but packed has ", x.size(0), " rows");
  auto sizes = x.sizes().vec();
  sizes[0] = max_len;
  sizes.insert(sizes.begin(), batch);
  auto out = at::empty(sizes, x.options());
  const int64_t feat = row_features(x, 1), esize = x.element_size();
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
    unpack_packed_cpu(src, dst + b0 * max_len * feat * esize, cup + b0, b1 - b0, max_len, feat, esize);
  });
  return out;
}

}  // namespace
}  // namespace slpfast

TORCH_LIBRARY_IMPL(slpfast, CPU, m) {
  m.impl("pack_padded", &slpfast::pack_padded_cpu_op);
  m.impl("unpack_packed", &slpfast::unpack_packed_cpu_op);
}
