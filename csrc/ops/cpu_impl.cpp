// CPU implementations of the torch.ops.slpfast ops: thin wrappers that check arguments,
// allocate outputs and call the torch-free core in csrc/core with at::parallel_for.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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

// ---------------------------------------------------------------- pose ops
// Clips are handed out two at a time from a shared counter to at::get_num_threads() workers:
// this balances clips of different lengths, and on an oversubscribed machine a descheduled
// worker delays two clips, not half the batch. Every clip is computed independently, so the
// result does not depend on the schedule. The workers are at::parallel_for's threads when this
// file is compiled with OpenMP (setup.py passes -fopenmp on Linux); otherwise (then
// at::parallel_for, a header template, silently runs serially) the caller plus std::threads.
// Large outputs are written once right after allocation, so every 4 KiB page of them faults
// (and is zeroed) on first touch: with B=256 clips that is ~20k faults per call. Asking for
// transparent huge pages on the fresh (untouched) range turns them into a few dozen 2 MiB
// faults. Only for sizes that glibc always serves with a private mmap (>= 32 MiB, its largest
// dynamic mmap threshold), so no heap mapping is touched; a no-op where THP is off.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const size_t n = t.nbytes();
  if (n < (size_t{32} << 20)) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t a = (p + kHuge - 1) & ~(kHuge - 1), e = (p + n) & ~(kHuge - 1);
  if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);  // advisory: errors ignored
#else
  (void)t;
#endif
}

template <typename F>
void parallel_over_clips(int64_t batch, int64_t work_per_clip, const F& fn) {
  constexpr int64_t kChunk = 2;
  constexpr int64_t kMinWorkPerThread = 1 << 16;  // joints: below this a thread costs more than it saves
  int64_t workers = std::min<int64_t>(at::get_num_threads(), (batch + kChunk - 1) / kChunk);
  workers = std::min<int64_t>(workers, std::max<int64_t>(1, batch * work_per_clip / kMinWorkPerThread));
  if (workers <= 1 || at::in_parallel_region()) {
    if (batch > 0) fn(0, batch);
    return;
  }
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t b0 = next.fetch_add(kChunk); b0 < batch; b0 = next.fetch_add(kChunk))
      fn(b0, std::min(b0 + kChunk, batch));
  };
#ifdef INTRA_OP_PARALLEL
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) { work(); });
#else
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
#endif
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> normalize_pose_cpu_op(const at::Tensor& pose, const at::Tensor& conf,
                                                                     const at::Tensor& seqs, c10::IntArrayRef layout,
                                                                     double conf_threshold) {
  const char* op = "normalize_pose";
  std::vector<int32_t> table;
  const PoseShape s = check_pose_inputs(op, pose, conf, seqs, layout, &table);
  const auto x = pose.contiguous();
  const auto c = conf.contiguous();
  const auto sq = seqs.contiguous();
  check_seqs_values(op, s.packed ? "cu_seqlens" : "lengths", sq, s, s.packed ? s.rows : s.T);
  auto out = at::empty_like(x);
  auto out_conf = at::empty_like(c);
  advise_huge_pages(out);
  advise_huge_pages(out_conf);
  auto info = at::empty({s.batch, 5}, x.options().dtype(at::kDouble));
  pose::NormalizeArgs a = normalize_args(s, x, c, out, out_conf, sq, info, conf_threshold);
  a.layout = pose::make_layout(table.data(), table.data());
  parallel_over_clips(s.batch, std::max<int64_t>(s.packed ? s.rows / std::max<int64_t>(s.batch, 1) : s.T, 1) * s.J,
                      [&](int64_t b0, int64_t b1) { pose::normalize_cpu(a, b0, b1); });
  return {out, out_conf, info};
}

at::Tensor sample_augment_params_cpu_op(const at::Tensor& clip_ids, int64_t seed, c10::ArrayRef<double> config,
                                        int64_t num_parts) {
  TORCH_CHECK(clip_ids.dim() == 1 && clip_ids.scalar_type() == at::kLong,
              "sample_augment_params: clip_ids must be a 1-D int64 tensor, got ", clip_ids.scalar_type(), " ",
              clip_ids.sizes());
  TORCH_CHECK(config.size() == pose::kNumSampleCfg, "sample_augment_params: sample_config must have ",
              pose::kNumSampleCfg, " entries, got ", config.size());
  TORCH_CHECK(num_parts >= 1 && num_parts <= pose::kMaxParts, "sample_augment_params: num_parts must be in [1, ",
              pose::kMaxParts, "], got ", num_parts);
  const auto ids = clip_ids.contiguous();
  const int64_t batch = ids.size(0);
  auto params = at::empty({batch, pose::kNumParams}, ids.options().dtype(at::kDouble));
  const int64_t* idp = ids.data_ptr<int64_t>();
  double* out = params.data_ptr<double>();
  at::parallel_for(0, batch, 64, [&](int64_t b0, int64_t b1) {
    pose::sample_params_cpu(idp, b0, b1, static_cast<uint64_t>(seed), config.data(), static_cast<int>(num_parts), out);
  });
  return params;
}

std::tuple<at::Tensor, at::Tensor> augment_pose_cpu_op(const at::Tensor& pose, const at::Tensor& conf,
                                                       const at::Tensor& seqs, const at::Tensor& out_seqs,
                                                       int64_t out_len, const at::Tensor& params,
                                                       const at::Tensor& clip_ids, int64_t seed,
                                                       c10::IntArrayRef layout, c10::ArrayRef<double> elem_config,
                                                       bool normalize, double conf_threshold) {
  const char* op = "augment_pose";
  std::vector<int32_t> table;
  const PoseShape s = check_pose_inputs(op, pose, conf, seqs, layout, &table);
  check_augment_extras(op, s, pose, out_seqs, out_len, params, clip_ids, elem_config);
  const auto x = pose.contiguous();
  const auto c = conf.contiguous();
  const auto sq = seqs.contiguous();
  const auto osq = out_seqs.contiguous();
  const auto prm = params.contiguous();
  const auto ids = clip_ids.contiguous();
  check_seqs_values(op, s.packed ? "cu_seqlens" : "lengths", sq, s, s.packed ? s.rows : s.T);
  check_seqs_values(op, s.packed ? "out_cu_seqlens" : "out_lengths", osq, s, out_len);
  auto out = at::empty(augment_out_shape(s, out_len), x.options());
  auto out_conf = at::empty(out.sizes().slice(0, out.dim() - 1), c.options());
  advise_huge_pages(out);
  advise_huge_pages(out_conf);
  pose::AugmentArgs a = augment_args(s, x, c, out, out_conf, sq, osq, out_len, prm, ids, seed, elem_config,
                                     normalize, conf_threshold);
  a.layout = pose::make_layout(table.data(), table.data());
  const int64_t out_rows = s.packed ? out_len : s.batch * out_len;
  parallel_over_clips(s.batch, std::max<int64_t>(out_rows / std::max<int64_t>(s.batch, 1), 1) * s.J,
                      [&](int64_t b0, int64_t b1) { pose::augment_cpu(a, b0, b1); });
  return {out, out_conf};
}

}  // namespace
}  // namespace slpfast

TORCH_LIBRARY_IMPL(slpfast, CPU, m) {
  m.impl("normalize_pose", &slpfast::normalize_pose_cpu_op);
  m.impl("sample_augment_params", &slpfast::sample_augment_params_cpu_op);
  m.impl("augment_pose", &slpfast::augment_pose_cpu_op);
  m.impl("pack_padded", &slpfast::pack_padded_cpu_op);
  m.impl("unpack_packed", &slpfast::unpack_packed_cpu_op);
}
