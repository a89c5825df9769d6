// Every schema of the torch.ops.slpfast namespace lives here; implementations are
// registered per device in cpu_impl.cpp and cuda_impl.cpp, fake (meta) implementations
// and autograd from Python (slpfast/ops/_registration.py).
#include <torch/library.h>

TORCH_LIBRARY(slpfast, m) {
  // padded (B, T, *rest) + cu_seqlens (B+1,) int64 -> packed (total, *rest).
  // `total` must equal cu_seqlens[-1]; passing it keeps the output shape static.
  m.def("pack_padded(Tensor padded, Tensor cu_seqlens, SymInt total) -> Tensor");
  // packed (total, *rest) + cu_seqlens (B+1,) int64 -> padded (B, max_len, *rest), zero padding.
  m.def("unpack_packed(Tensor packed, Tensor cu_seqlens, SymInt max_len) -> Tensor");
}
