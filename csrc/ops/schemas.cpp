// Every schema of the torch.ops.slpfast namespace lives here; implementations are
// registered per device in cpu_impl.cpp and cuda_impl.cpp, fake (meta) implementations
// and autograd from Python (slpfast/ops/_registration.py).
#include <Python.h>
#include <torch/library.h>

// `import slpfast._C` loads this library, which runs the registrations below; the Python
// module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(slpfast, m) {
  // padded (B, T, *rest) + cu_seqlens (B+1,) int64 -> packed (total, *rest).
  // `total` must equal cu_seqlens[-1]; passing it keeps the output shape static.
  m.def("pack_padded(Tensor padded, Tensor cu_seqlens, SymInt total) -> Tensor");
  // packed (total, *rest) + cu_seqlens (B+1,) int64 -> padded (B, max_len, *rest), zero padding.
  m.def("unpack_packed(Tensor packed, Tensor cu_seqlens, SymInt max_len) -> Tensor");

  // ---- pose ops (csrc/core/pose_*.h; Python API and fake impls in slpfast/ops/pose.py) ----
  // Clips are padded, pose (B, T, J, C) with `seqs` = lengths (B,) int64, or packed,
  // pose (N, J, C) with `seqs` = cu_seqlens (B+1,) int64; conf has pose's shape without C,
  // float32. `layout` is the int list of slpfast/ops/pose.py (anchors, scale groups,
  // flip permutation, part ids). Not differentiable.
  // -> (normalized pose (same shape/dtype), conf float32 (0 = invalid), info (B, 5) float64:
  //     centre x, y, z, scale, fallback code 0 shoulders / 1 bounding box / 2 nothing valid).
  m.def("normalize_pose(Tensor pose, Tensor conf, Tensor seqs, int[] layout, float conf_threshold)"
        " -> (Tensor, Tensor, Tensor)");
  // clip_ids (B,) int64 -> params (B, 9) float64 on clip_ids' device (Philox keyed by seed, clip).
  m.def("sample_augment_params(Tensor clip_ids, int seed, float[] sample_config, int num_parts) -> Tensor");
  // Augments (optionally normalizing first, fused). Output: padded (B, out_len, J, C) with
  // out_seqs = output lengths (B,), or packed (out_len, J, C) with out_seqs = cu_seqlens.
  m.def("augment_pose(Tensor pose, Tensor conf, Tensor seqs, Tensor out_seqs, SymInt out_len, Tensor params,"
        " Tensor clip_ids, int seed, int[] layout, float[] elem_config, bool normalize, float conf_threshold)"
        " -> (Tensor, Tensor)");
}
