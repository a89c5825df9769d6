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

// ---------------------------------------------------------------- pose ops
#include <climits>
#include <vector>

#include "../core/pack.h"
#include "../core/pose_api.h"

namespace slpfast {

// Shape facts of a pose batch: padded (B, T, J, C) + lengths, or packed (N, J, C) + cu_seqlens.
struct PoseShape {
  int64_t batch, rows, T, J, C;
  bool packed;
};

inline void check_seqs_tensor(const char* op, const char* name, const at::Tensor& seqs, const at::Tensor& pose) {
  TORCH_CHECK(seqs.dim() == 1 && seqs.scalar_type() == at::kLong, op, ": ", name,
              " must be a 1-D int64 tensor, got ", seqs.scalar_type(), " ", seqs.sizes());
  TORCH_CHECK(seqs.device() == pose.device(), op, ": ", name, " is on ", seqs.device(), " but pose is on ",
              pose.device());
}

// Checks pose/conf/seqs/layout (shapes, dtypes, devices, layout table) and returns the shape;
// the layout (an int list: host memory on every device) is copied to `table` as int32.
inline PoseShape check_pose_inputs(const char* op, const at::Tensor& pose, const at::Tensor& conf,
                                   const at::Tensor& seqs, c10::IntArrayRef layout, std::vector<int32_t>* table) {
  TORCH_CHECK(pose.dim() == 3 || pose.dim() == 4, op, ": pose must be (B, T, J, C) or (N, J, C), got ",
              pose.sizes());
  TORCH_CHECK(pose.scalar_type() == at::kFloat || pose.scalar_type() == at::kHalf, op,
              ": pose must be float32 or float16, got ", pose.scalar_type());
  PoseShape s;
  s.packed = pose.dim() == 3;
  s.C = pose.size(-1);
  s.J = pose.size(-2);
  TORCH_CHECK(s.C == 2 || s.C == 3, op, ": pose must have C = 2 or 3 coordinates, got ", s.C);
  TORCH_CHECK(conf.scalar_type() == at::kFloat, op, ": conf must be float32, got ", conf.scalar_type());
  TORCH_CHECK(conf.sizes() == pose.sizes().slice(0, pose.dim() - 1), op, ": conf must have shape ",
              pose.sizes().slice(0, pose.dim() - 1), ", got ", conf.sizes());
  TORCH_CHECK(conf.device() == pose.device(), op, ": conf is on ", conf.device(), " but pose is on ",
              pose.device());
  check_seqs_tensor(op, s.packed ? "cu_seqlens" : "lengths", seqs, pose);
  if (s.packed) {
    TORCH_CHECK(seqs.size(0) >= 1, op, ": cu_seqlens must have shape (B+1,)");
    s.batch = seqs.size(0) - 1;
    s.rows = pose.size(0);
    s.T = -1;
  } else {
    s.batch = pose.size(0);
    s.T = pose.size(1);
    s.rows = s.batch * s.T;
    TORCH_CHECK(seqs.size(0) == s.batch, op, ": lengths must have shape (B,)=(", s.batch, ",), got ",
                seqs.sizes());
  }
  table->resize(layout.size());
  for (size_t k = 0; k < layout.size(); ++k) {
    TORCH_CHECK(layout[k] >= INT32_MIN && layout[k] <= INT32_MAX, op, ": layout entries must fit in int32");
    (*table)[k] = static_cast<int32_t>(layout[k]);
  }
  const char* err = pose::check_layout(table->data(), static_cast<int64_t>(table->size()));
  TORCH_CHECK(err == nullptr, op, ": ", err ? err : "");
  TORCH_CHECK((*table)[0] == s.J, op, ": layout is for J=", (*table)[0], " joints but pose has J=", s.J);
  return s;
}

// Host-side value checks of lengths / cu_seqlens (CPU tensors only).
inline void check_seqs_values(const char* op, const char* name, const at::Tensor& seqs, const PoseShape& s,
                              int64_t rows_or_T) {
  const int64_t* p = seqs.data_ptr<int64_t>();
  if (s.packed) {
    const char* err = check_cu_seqlens(p, s.batch, -1);
    TORCH_CHECK(err == nullptr, op, ": ", name, ": ", err ? err : "");
    TORCH_CHECK(p[s.batch] == rows_or_T, op, ": ", name, "[-1]=", p[s.batch], " but the array has ", rows_or_T,
                " rows");
  } else {
    for (int64_t b = 0; b < s.batch; ++b)
      TORCH_CHECK(p[b] >= 0 && p[b] <= rows_or_T, op, ": ", name, " must lie in [0, ", rows_or_T, "], got ", p[b]);
  }
}

inline void check_augment_extras(const char* op, const PoseShape& s, const at::Tensor& pose, const at::Tensor& out_seqs,
                                 int64_t out_len, const at::Tensor& params, const at::Tensor& clip_ids,
                                 c10::ArrayRef<double> elem_config) {
  check_seqs_tensor(op, s.packed ? "out_cu_seqlens" : "out_lengths", out_seqs, pose);
  TORCH_CHECK(out_seqs.size(0) == (s.packed ? s.batch + 1 : s.batch), op, ": out_seqs has the wrong size ",
              out_seqs.sizes());
  TORCH_CHECK(out_len >= 0, op, ": out_len must be >= 0, got ", out_len);
  TORCH_CHECK(params.dim() == 2 && params.size(0) == s.batch && params.size(1) == pose::kNumParams &&
                  params.scalar_type() == at::kDouble,
              op, ": params must be float64 of shape (B, ", pose::kNumParams, "), got ", params.scalar_type(), " ",
              params.sizes());
  TORCH_CHECK(clip_ids.dim() == 1 && clip_ids.size(0) == s.batch && clip_ids.scalar_type() == at::kLong, op,
              ": clip_ids must be int64 of shape (B,), got ", clip_ids.scalar_type(), " ", clip_ids.sizes());
  TORCH_CHECK(params.device() == pose.device() && clip_ids.device() == pose.device(), op,
              ": params and clip_ids must be on the device of pose");
  TORCH_CHECK(elem_config.size() == 3, op, ": elem_config must be [jitter_std, joint_drop_p, frame_drop_p]");
}

inline std::vector<int64_t> augment_out_shape(const PoseShape& s, int64_t out_len) {
  if (s.packed) return {out_len, s.J, s.C};
  return {s.batch, out_len, s.J, s.C};
}

// Kernel arguments shared by the CPU and CUDA bindings (everything but the layout pointers,
// which differ per device). Tensors must be the contiguous inputs/outputs of the op.
// The fields NormalizeArgs and AugmentArgs share: data pointers, batch, C, dtype, threshold.
template <typename Args>
inline void set_io_args(Args* a, const PoseShape& s, const at::Tensor& x, const at::Tensor& c, at::Tensor& out,
                        at::Tensor& out_conf, double conf_threshold) {
  a->pose = x.data_ptr();
  a->conf = c.data_ptr<float>();
  a->out_pose = out.data_ptr();
  a->out_conf = out_conf.data_ptr<float>();
  a->batch = s.batch;
  a->C = static_cast<int>(s.C);
  a->half = x.scalar_type() == at::kHalf;
  a->thr = conf_threshold;
}

inline pose::NormalizeArgs normalize_args(const PoseShape& s, const at::Tensor& x, const at::Tensor& c,
                                          at::Tensor& out, at::Tensor& out_conf, const at::Tensor& seqs,
                                          at::Tensor& info, double conf_threshold) {
  pose::NormalizeArgs a;
  set_io_args(&a, s, x, c, out, out_conf, conf_threshold);
  a.seqs = pose::Seqs{seqs.data_ptr<int64_t>(), s.packed ? -1 : s.T};
  a.info = info.data_ptr<double>();
  return a;
}

inline pose::AugmentArgs augment_args(const PoseShape& s, const at::Tensor& x, const at::Tensor& c,
                                      at::Tensor& out, at::Tensor& out_conf, const at::Tensor& seqs,
                                      const at::Tensor& out_seqs, int64_t out_len, const at::Tensor& params,
                                      const at::Tensor& clip_ids, int64_t seed,
                                      c10::ArrayRef<double> elem_config, bool normalize, double conf_threshold) {
  pose::AugmentArgs a;
  set_io_args(&a, s, x, c, out, out_conf, conf_threshold);
  a.in = pose::Seqs{seqs.data_ptr<int64_t>(), s.packed ? -1 : s.T};
  a.out = pose::Seqs{out_seqs.data_ptr<int64_t>(), s.packed ? -1 : out_len};
  a.params = params.data_ptr<double>();
  a.clip_ids = clip_ids.data_ptr<int64_t>();
  a.seed = static_cast<uint64_t>(seed);
  a.elem = pose::ElemConfig{elem_config[0], elem_config[1], elem_config[2]};
  a.normalize = normalize;
  return a;
}

}  // namespace slpfast
