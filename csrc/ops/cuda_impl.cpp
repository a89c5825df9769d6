// CUDA implementations of the torch.ops.slpfast ops: argument checks and allocation here,
// the kernels themselves in the torch-free csrc/core/*.cu. Compiled only when the extension
// is built with CUDA (SLPFAST_WITH_CUDA).
#include <algorithm>
#include <utility>
#include <vector>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#define SLPFAST_WITH_CUDA_DECLS
#include "../core/keyed_cache.h"
#include "../core/pack.h"
#include "checks.h"

namespace slpfast {
namespace {

void check_launch(const char* op, int status) {
  TORCH_CHECK(status == 0, op, ": CUDA kernel launch failed with cudaError ", status);
}

// cu_seqlens values are not re-validated here (that would need a device->host sync); the
// Python wrapper validates lengths on the host before they reach the device, so here we
// only check shapes. The kernels clamp every sequence to the packed rows (pack_cuda_kernels.cuh).
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
                                row_features(x, 2), x.element_size(), total,
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
                                  row_features(x, 1), x.element_size(), x.size(0),
                                  c10::cuda::getCurrentCUDAStream().stream()));
  return out;
}

// ---------------------------------------------------------------- pose ops
// Lengths / cu_seqlens values are validated by the Python wrappers on the host; here only
// shapes, dtypes and devices are checked (no device->host sync). The kernels clamp every clip
// to the arrays' rows, so a raw-op call with bad values gives wrong output, not a memory fault. The layout table is an int
// list (host memory): its header is read here, and its device copy is made once per table and
// device (device_layout).

// The layout table on `device`: copied once per (device, table) and kept for the life of the
// process (a training run uses one or two layouts), so a call costs no pinned allocation and
// no copy on the stream. The copy goes through pinned memory without blocking (a copy from
// pageable memory synchronizes the stream); the first one of a kept table then waits for its
// stream once, because later calls may run on other streams and must find the table there
// (so make that first call before capturing a CUDA graph). Past 64 tables, each call copies
// its own, in stream order, without the wait. The cache is never destroyed: its tensors must
// not be freed after the CUDA runtime has shut down at exit.
at::Tensor device_layout(const std::vector<int32_t>& table, const at::Device& device) {
  TORCH_CHECK(device.is_cuda() && device.index() >= 0, "pose ops: expected a CUDA device with an index, got ",
              device);
  using Key = std::pair<int64_t, std::vector<int32_t>>;
  static auto* cache = new KeyedCache<Key, at::Tensor>(64);
  return cache->get(Key{device.index(), table}, [&](bool kept) {
    auto host = at::empty({static_cast<int64_t>(table.size())},
                          at::TensorOptions().dtype(at::kInt).pinned_memory(true));
    std::copy(table.begin(), table.end(), host.data_ptr<int32_t>());
    auto on_device = host.to(host.options().device(device), /*non_blocking=*/true);
    if (kept) c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
    return on_device;
  });
}

at::Tensor pose_workspace(const at::Tensor& like, int64_t batch) {
  return at::empty({std::max<int64_t>(pose::cuda_workspace_bytes(batch), 1)}, like.options().dtype(at::kByte));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> normalize_pose_cuda_op(const at::Tensor& pose, const at::Tensor& conf,
                                                                      const at::Tensor& seqs, c10::IntArrayRef layout,
                                                                      double conf_threshold) {
  const char* op = "normalize_pose";
  std::vector<int32_t> table;
  const PoseShape s = check_pose_inputs(op, pose, conf, seqs, layout, &table);
  const c10::cuda::CUDAGuard guard(pose.device());
  const auto x = pose.contiguous();
  const auto c = conf.contiguous();
  const auto sq = seqs.contiguous();
  const auto dev_layout = device_layout(table, pose.device());
  auto out = at::empty_like(x);
  auto out_conf = at::empty_like(c);
  auto info = at::empty({s.batch, 5}, x.options().dtype(at::kDouble));
  auto ws = pose_workspace(x, s.batch);
  pose::NormalizeArgs a = normalize_args(s, x, c, out, out_conf, sq, info, conf_threshold);
  a.layout = pose::make_layout(table.data(), dev_layout.data_ptr<int32_t>());
  check_launch(op, pose::normalize_cuda_rows(a, s.rows, ws.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()));
  return {out, out_conf, info};
}

at::Tensor sample_augment_params_cuda_op(const at::Tensor& clip_ids, int64_t seed, c10::ArrayRef<double> config,
                                         int64_t num_parts) {
  TORCH_CHECK(clip_ids.dim() == 1 && clip_ids.scalar_type() == at::kLong,
              "sample_augment_params: clip_ids must be a 1-D int64 tensor, got ", clip_ids.scalar_type(), " ",
              clip_ids.sizes());
  TORCH_CHECK(config.size() == pose::kNumSampleCfg, "sample_augment_params: sample_config must have ",
              pose::kNumSampleCfg, " entries, got ", config.size());
  TORCH_CHECK(num_parts >= 1 && num_parts <= pose::kMaxParts, "sample_augment_params: num_parts must be in [1, ",
              pose::kMaxParts, "], got ", num_parts);
  const c10::cuda::CUDAGuard guard(clip_ids.device());
  const auto ids = clip_ids.contiguous();
  auto params = at::empty({ids.size(0), pose::kNumParams}, ids.options().dtype(at::kDouble));
  check_launch("sample_augment_params",
               pose::sample_params_cuda(ids.data_ptr<int64_t>(), ids.size(0), static_cast<uint64_t>(seed),
                                        config.data(), static_cast<int>(num_parts), params.data_ptr<double>(),
                                        c10::cuda::getCurrentCUDAStream().stream()));
  return params;
}

std::tuple<at::Tensor, at::Tensor> augment_pose_cuda_op(const at::Tensor& pose, const at::Tensor& conf,
                                                        const at::Tensor& seqs, const at::Tensor& out_seqs,
                                                        int64_t out_len, const at::Tensor& params,
                                                        const at::Tensor& clip_ids, int64_t seed,
                                                        c10::IntArrayRef layout, c10::ArrayRef<double> elem_config,
                                                        bool normalize, double conf_threshold) {
  const char* op = "augment_pose";
  std::vector<int32_t> table;
  const PoseShape s = check_pose_inputs(op, pose, conf, seqs, layout, &table);
  check_augment_extras(op, s, pose, out_seqs, out_len, params, clip_ids, elem_config);
  const c10::cuda::CUDAGuard guard(pose.device());
  const auto x = pose.contiguous();
  const auto c = conf.contiguous();
  const auto sq = seqs.contiguous();
  const auto osq = out_seqs.contiguous();
  const auto prm = params.contiguous();
  const auto ids = clip_ids.contiguous();
  const auto dev_layout = device_layout(table, pose.device());
  auto out = at::empty(augment_out_shape(s, out_len), x.options());
  auto out_conf = at::empty(out.sizes().slice(0, out.dim() - 1), c.options());
  auto ws = pose_workspace(x, s.batch);
  pose::AugmentArgs a = augment_args(s, x, c, out, out_conf, sq, osq, out_len, prm, ids, seed, elem_config,
                                     normalize, conf_threshold);
  a.layout = pose::make_layout(table.data(), dev_layout.data_ptr<int32_t>());
  const int64_t out_rows = s.packed ? out_len : s.batch * out_len;
  check_launch(op, pose::augment_cuda_rows(a, s.rows, out_rows, ws.data_ptr(),
                                           c10::cuda::getCurrentCUDAStream().stream()));
  return {out, out_conf};
}

}  // namespace
}  // namespace slpfast

TORCH_LIBRARY_IMPL(slpfast, CUDA, m) {
  m.impl("normalize_pose", &slpfast::normalize_pose_cuda_op);
  m.impl("sample_augment_params", &slpfast::sample_augment_params_cuda_op);
  m.impl("augment_pose", &slpfast::augment_pose_cuda_op);
  m.impl("pack_padded", &slpfast::pack_padded_cuda_op);
  m.impl("unpack_packed", &slpfast::unpack_packed_cuda_op);
}
