// The CUDA kernels of the pose ops (csrc/core/pose_cuda_kernels.cuh) run as host code under
// tests/cpp/cuda_emulation.h, launched as pose_cuda.cu launches them, and compared with the CPU
// implementation (pose_cpu.cpp): every output value, confidence and normalization record.
// CI has no GPU; this catches what a GPU run of tests/test_pose_cuda.py would, as far as it is
// a matter of indices, bounds, reductions and control flow (empty clips, packed and padded
// clips, layouts wider than a block, grids smaller than the rows, NaN input).

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cuda_emulation.h"  // before the kernels: defines __global__, threadIdx, ...
#include "guarded_array.h"
#include "pose_cuda_kernels.cuh"
#include "canonical_layouts.h"

using namespace slpfast::pose;
namespace K = slpfast::pose::cuda_kernels;

// Caps the row grid of the element kernels (0: as pose_cuda.cu launches them), so that their
// grid-stride loops run too.
static unsigned g_row_grid_cap = 0;

static unsigned row_grid(int64_t rows) {
  const unsigned g = K::row_grid(rows);
  return g_row_grid_cap ? std::min(g, g_row_grid_cap) : g;
}

// ---------------------------------------------------------------- launches as pose_cuda.cu's
template <typename T>
static void emulated_normalize(const NormalizeArgs& a, int64_t rows, ClipPlan* plans) {
  if (a.batch == 0) return;
  const T* pose = static_cast<const T*>(a.pose);
  launch_with_barriers(static_cast<unsigned>(a.batch), K::kPlanThreads, [&] {
    K::plan_kernel<T>(pose, a.conf, a.seqs, rows, a.seqs, rows, a.layout, a.C, a.thr, true, nullptr, nullptr, plans,
                      a.info);
  });
  if (rows == 0) return;
  T* out = static_cast<T*>(a.out_pose);
  launch_serial(row_grid(rows), K::row_threads(a.layout.J), [&] {
    if (a.C == 2)
      K::normalize_kernel<T, 2>(pose, a.conf, out, a.out_conf, a.seqs, a.batch, rows, a.layout, a.thr, plans);
    else
      K::normalize_kernel<T, 3>(pose, a.conf, out, a.out_conf, a.seqs, a.batch, rows, a.layout, a.thr, plans);
  });
}

template <typename T>
static void emulated_augment(const AugmentArgs& a, int64_t in_rows, int64_t rows, ClipPlan* plans) {
  if (a.batch == 0) return;
  const T* pose = static_cast<const T*>(a.pose);
  launch_with_barriers(static_cast<unsigned>(a.batch), K::kPlanThreads, [&] {
    K::plan_kernel<T>(pose, a.conf, a.in, in_rows, a.out, rows, a.layout, a.C, a.thr, a.normalize, a.params,
                      a.clip_ids, plans, nullptr);
  });
  if (rows == 0) return;
  T* out = static_cast<T*>(a.out_pose);
  launch_serial(row_grid(rows), K::row_threads(a.layout.J), [&] {
    if (a.normalize && a.C == 2)
      K::augment_kernel<T, true, 2>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows, a.layout, a.thr, a.elem,
                                    a.seed, plans);
    else if (a.normalize)
      K::augment_kernel<T, true, 3>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows, a.layout, a.thr, a.elem,
                                    a.seed, plans);
    else if (a.C == 2)
      K::augment_kernel<T, false, 2>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows, a.layout, a.thr, a.elem,
                                     a.seed, plans);
    else
      K::augment_kernel<T, false, 3>(pose, a.conf, out, a.out_conf, a.out, a.batch, rows, a.layout, a.thr, a.elem,
                                     a.seed, plans);
  });
}

// ---------------------------------------------------------------- data
// A random but consistent layout of J joints (parents before children, a flip permutation of
// swapped pairs, 5 parts), for widths the canonical layout does not have.
static std::vector<int32_t> random_layout(int J, std::mt19937& g) {
  std::vector<int32_t> t(kHeader + 4 * J, 0);
  t[0] = J;
  t[1] = 1 % J;
  t[2] = 2 % J;
  t[3] = 5;
  t[4] = 2;
  for (int k = 0; k < 4; ++k) t[5 + k] = static_cast<int32_t>(g() % J);
  std::vector<int32_t> perm(J);
  for (int j = 0; j < J; ++j) perm[j] = j;
  for (int j = 0; j + 1 < J; j += 2)
    if (g() % 2) std::swap(perm[j], perm[j + 1]);
  for (int j = 0; j < J; ++j) {
    t[kHeader + j] = (j == 0 || g() % 3 == 0) ? -1 : static_cast<int32_t>(g() % j);
    t[kHeader + J + j] = static_cast<int32_t>(g() % 3) - 1;
    t[kHeader + 2 * J + j] = perm[j];
    t[kHeader + 3 * J + j] = static_cast<int32_t>(g() % 5);
  }
  return t;
}

static double value(const float* p, size_t i) { return p[i]; }
static double value(const uint16_t* p, size_t i) { return half_to_float_bits(p[i]); }
static void poison(std::vector<float>& v) { std::fill(v.begin(), v.end(), NAN); }
static void poison(std::vector<uint16_t>& v) { std::fill(v.begin(), v.end(), uint16_t(0x7e01)); }  // a NaN

// Every pose value and confidence of the emulated kernels against the CPU's. Both outputs start
// as NaN: a value one side never writes shows up as a mismatch.
template <typename T>
static void expect_same(const std::string& what, const std::vector<T>& gpu, const std::vector<T>& cpu,
                        const std::vector<float>& gpu_conf, const std::vector<float>& cpu_conf, double tol) {
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double x = value(gpu.data(), i), y = value(cpu.data(), i);
    const bool same = std::memcmp(&gpu[i], &cpu[i], sizeof(T)) == 0 || std::fabs(x - y) <= tol * (1 + std::fabs(y));
    if (!same && bad++ == 0) first = i;
  }
  size_t bad_conf = 0;
  for (size_t i = 0; i < gpu_conf.size(); ++i)
    if (!(std::memcmp(&gpu_conf[i], &cpu_conf[i], 4) == 0 || std::fabs(gpu_conf[i] - cpu_conf[i]) <= 1e-6)) ++bad_conf;
  if (bad || bad_conf) {
    std::fprintf(stderr, "%s: %zu of %zu pose values differ (first at %zu: %g vs %g), %zu confidences differ\n",
                 what.c_str(), bad, gpu.size(), first, bad ? value(gpu.data(), first) : 0.0,
                 bad ? value(cpu.data(), first) : 0.0, bad_conf);
    ++g_failures;
  }
}

struct Case {
  std::vector<int32_t> table;
  int C;
  bool packed;
  std::vector<int64_t> lens;
  int64_t cap;          // padded rows per clip
  bool normalize;       // augment: fused normalization
  bool extras;          // augment: jitter and dropout
  int64_t out_cap;      // padded augment output rows per clip (-1: the longest resampled clip)
  bool bad_values;      // NaN / inf in pose and conf
  uint32_t seed;
};

template <typename T>
static void run_case(const Case& c) {
  constexpr bool half = sizeof(T) == 2;
  const int J = c.table[0], C = c.C;
  const int64_t B = static_cast<int64_t>(c.lens.size());
  std::vector<int64_t> cu(B + 1, 0);
  for (int64_t b = 0; b < B; ++b) cu[b + 1] = cu[b] + c.lens[b];
  const int64_t rows = c.packed ? cu[B] : B * c.cap;
  std::mt19937 g(c.seed);
  std::normal_distribution<double> coord(300.0, 60.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<T> pose(static_cast<size_t>(rows * J * C));
  std::vector<float> conf(static_cast<size_t>(rows * J));
  for (int64_t i = 0; i < rows * J; ++i) {
    conf[i] = u(g) < 0.15 ? 0.0f : static_cast<float>(0.1 + 0.9 * u(g));
    if (c.bad_values && u(g) < 0.02) conf[i] = u(g) < 0.5 ? NAN : INFINITY;
    for (int k = 0; k < C; ++k) {
      float v = static_cast<float>(coord(g));
      if (c.bad_values && u(g) < 0.02) v = u(g) < 0.5 ? NAN : -INFINITY;
      if constexpr (half) pose[i * C + k] = float_to_half_bits(v);
      else pose[i * C + k] = v;
    }
  }
  if (B > 2)  // clip 2 never shows its first shoulder: the bounding-box fallback of the plan
    for (int64_t r = 0; r < c.lens[2]; ++r) conf[((c.packed ? cu[2] : 2 * c.cap) + r) * J + c.table[1]] = 0.0f;
  const Layout L = make_layout(c.table.data(), c.table.data());
  const Seqs in{c.packed ? cu.data() : c.lens.data(), c.packed ? -1 : c.cap};
  const double thr = c.bad_values ? 0.3 : 0.0;
  const std::string name = "J=" + std::to_string(J) + " C=" + std::to_string(C) + (half ? " f16" : " f32") +
                           (c.packed ? " packed" : " padded") + " B=" + std::to_string(B) +
                           (c.bad_values ? " nan" : "") + " grid cap " + std::to_string(g_row_grid_cap);

  {  // normalize
    std::vector<T> out_gpu(pose.size()), out_cpu(pose.size());
    std::vector<float> conf_gpu(conf.size()), conf_cpu(conf.size());
    poison(out_gpu), poison(out_cpu), poison(conf_gpu), poison(conf_cpu);
    std::vector<double> info_gpu(B * 5, NAN), info_cpu(B * 5, NAN);
    NormalizeArgs a{pose.data(), conf.data(), out_gpu.data(), conf_gpu.data(), in, B, C, half, thr, L, info_gpu.data()};
    std::vector<ClipPlan> plans(B + 1);
    emulated_normalize<T>(a, rows, plans.data());
    a.out_pose = out_cpu.data();
    a.out_conf = conf_cpu.data();
    a.info = info_cpu.data();
    normalize_cpu(a, 0, B);
    expect_same("normalize " + name, out_gpu, out_cpu, conf_gpu, conf_cpu, half ? 1e-3 : 1e-6);
    for (int64_t i = 0; i < B * 5; ++i) CHECK_NEAR(info_gpu[i], info_cpu[i], 1e-9 * (1 + std::fabs(info_cpu[i])));
  }
  {  // augment
    std::vector<int64_t> ids(B);
    for (int64_t b = 0; b < B; ++b) ids[b] = 100 + 7 * b;
    const double sample_cfg[9] = {0.5, 0.2, 0.2, 0.2, 0.0, 0.1, 0.7, 1.6, 0.1};
    std::vector<double> params(B * kNumParams);
    sample_params_cpu(ids.data(), 0, B, 77, sample_cfg, c.table[3], params.data());
    std::vector<int64_t> out_lens(B), out_cu(B + 1, 0);
    int64_t longest = 0;
    for (int64_t b = 0; b < B; ++b) {
      out_lens[b] = resampled_length(c.lens[b], params[b * kNumParams + 7]);  // [7]: speed
      longest = std::max(longest, out_lens[b]);
    }
    const int64_t out_cap = c.out_cap >= 0 ? c.out_cap : longest;
    if (!c.packed)
      for (auto& n : out_lens) n = std::min(n, out_cap);
    for (int64_t b = 0; b < B; ++b) out_cu[b + 1] = out_cu[b] + out_lens[b];
    const int64_t out_rows = c.packed ? out_cu[B] : B * out_cap;
    const Seqs out{c.packed ? out_cu.data() : out_lens.data(), c.packed ? -1 : out_cap};
    std::vector<T> out_gpu(static_cast<size_t>(out_rows * J * C)), out_cpu(out_gpu.size());
    std::vector<float> conf_gpu(static_cast<size_t>(out_rows * J)), conf_cpu(conf_gpu.size());
    poison(out_gpu), poison(out_cpu), poison(conf_gpu), poison(conf_cpu);
    const ElemConfig E = c.extras ? ElemConfig{0.02, 0.1, 0.05} : ElemConfig{0, 0, 0};
    AugmentArgs a{pose.data(), conf.data(), out_gpu.data(), conf_gpu.data(), in, out, B, C, half, params.data(),
                  ids.data(), 77, E, c.normalize, thr, L};
    std::vector<ClipPlan> plans(B + 1);
    emulated_augment<T>(a, rows, out_rows, plans.data());
    a.out_pose = out_cpu.data();
    a.out_conf = conf_cpu.data();
    augment_cpu(a, 0, B);
    expect_same("augment " + name + (c.normalize ? " +normalize" : "") + (c.extras ? " +jitter/dropout" : ""),
                out_gpu, out_cpu, conf_gpu, conf_cpu, half ? 1e-3 : 1e-6);
  }
}

static void run_both(const Case& c) {
  run_case<float>(c);
  run_case<uint16_t>(c);
}

// The sampler's grid is capped (grid_for): a batch larger than the grid's threads must loop.
static void test_sample_kernel_strides_past_its_grid() {
  const int64_t B = 1000;
  std::vector<int64_t> ids(B);
  for (int64_t b = 0; b < B; ++b) ids[b] = 3 * b + 1;
  const double cfg_values[9] = {0.5, 0.2, 0.2, 0.2, 1.0, 0.1, 0.7, 1.6, 0.3};
  const SampleConfig cfg = make_sample_config(cfg_values);
  std::vector<double> cpu(B * kNumParams), gpu(B * kNumParams, NAN);
  sample_params_cpu(ids.data(), 0, B, 9, cfg_values, 5, cpu.data());
  launch_serial(3, 128, [&] { K::sample_kernel(ids.data(), B, 9, cfg, 5, gpu.data()); });  // 384 threads
  size_t bad = 0;
  for (size_t i = 0; i < cpu.size(); ++i) bad += std::memcmp(&cpu[i], &gpu[i], sizeof(double)) != 0;
  CHECK(bad == 0);
  CHECK(K::grid_for(int64_t(1) << 40, 128) == 65535 * 16);
}


// ---------------------------------------------------------------- unchecked lengths
// The CUDA bindings cannot check lengths / cu_seqlens (device memory; reading them back is a
// sync), so a raw-op call may hand the kernels any values: lengths past the padded capacity or
// negative, cu_seqlens out of order, past the rows, negative, or with differences that overflow.
// The plan kernel clamps every clip to the arrays (clip_rows); before, it read and the element
// kernel wrote outside them. Output is garbage but every element is written, none outside.
static void run_unchecked_seqs(const std::vector<int64_t>& seq, bool packed, int64_t cap, int64_t out_len,
                               const std::vector<int64_t>& out_seq, bool at_end) {
  const std::vector<int32_t> table(std::begin(kCanonicalLayout), std::end(kCanonicalLayout));
  const Layout L = make_layout(table.data(), table.data());
  const int J = table[0], C = 2;
  const int64_t B = packed ? static_cast<int64_t>(seq.size()) - 1 : static_cast<int64_t>(seq.size());
  const int64_t rows = packed ? cap : B * cap;  // packed: `cap` is the array's row count
  const int64_t out_rows = packed ? out_len : B * out_len;
  GuardedArray<float> pose(rows * J * C, at_end, 1.0f), conf(rows * J, at_end, 0.9f);
  for (int64_t i = 0; i < rows * J * C; ++i) pose.data[i] = static_cast<float>(i % 97);
  GuardedArray<int64_t> seqs(seq.size(), at_end, 0), out_seqs(out_seq.size(), at_end, 0);
  std::copy(seq.begin(), seq.end(), seqs.data);
  std::copy(out_seq.begin(), out_seq.end(), out_seqs.data);
  GuardedArray<double> info(B * 5, at_end, NAN);
  std::vector<ClipPlan> plans(B);
  const Seqs in{seqs.data, packed ? -1 : cap};
  {
    GuardedArray<float> out(rows * J * C, at_end, NAN), out_conf(rows * J, at_end, NAN);
    NormalizeArgs a{pose.data, conf.data, out.data, out_conf.data, in, B, C, false, 0.0, L, info.data};
    emulated_normalize<float>(a, rows, plans.data());
    for (int64_t i = 0; i < rows * J; ++i) CHECK(!std::isnan(out_conf.data[i]));
  }
  std::vector<int64_t> ids(B);
  std::vector<double> params(B * kNumParams);
  const double cfg[9] = {0.5, 0.2, 0.2, 0.2, 0.0, 0.1, 0.7, 1.6, 0.1};
  sample_params_cpu(ids.data(), 0, B, 77, cfg, table[3], params.data());
  for (bool normalize : {false, true}) {
    GuardedArray<float> out(out_rows * J * C, at_end, NAN), out_conf(out_rows * J, at_end, NAN);
    const Seqs out_s{out_seqs.data, packed ? -1 : out_len};
    AugmentArgs a{pose.data, conf.data, out.data, out_conf.data, in, out_s, B, C, false, params.data(), ids.data(),
                  77, ElemConfig{0.02, 0.1, 0.05}, normalize, 0.0, L};
    emulated_augment<float>(a, rows, out_rows, plans.data());
    for (int64_t i = 0; i < out_rows * J; ++i) CHECK(!std::isnan(out_conf.data[i]));
  }
}

static void test_unchecked_seqs_stay_inside_the_arrays() {
  const int64_t big = INT64_MAX;
  for (bool at_end : {true, false}) {
    // padded: lengths past the capacity, negative, huge; output lengths likewise
    run_unchecked_seqs({9, -3, big, 2}, false, 4, 3, {7, -1, big, INT64_MIN}, at_end);
    // packed: out of order, past the rows, negative, overflowing differences, not starting at 0
    run_unchecked_seqs({0, 5, 3, 40, 6}, true, 8, 6, {0, 9, 2, -4, 6}, at_end);
    run_unchecked_seqs({-7, 3, -2, 8}, true, 8, 5, {3, 1, 8, 5}, at_end);
    run_unchecked_seqs({0, big, -2, 8}, true, 8, 4, {0, big, INT64_MIN, 4}, at_end);
    run_unchecked_seqs({big, INT64_MIN, big}, true, 3, 2, {INT64_MIN, big, 0}, at_end);
  }
}

int main() {
  std::mt19937 g(1);
  const std::vector<std::vector<int32_t>> layouts = {
      std::vector<int32_t>(std::begin(kCanonicalLayoutHandScale), std::end(kCanonicalLayoutHandScale)),
      std::vector<int32_t>(std::begin(kCanonicalLayout), std::end(kCanonicalLayout)),
      random_layout(3, g), random_layout(257, g), random_layout(300, g)};  // wider than a block (256)
  for (const auto& t : layouts) CHECK(check_layout(t.data(), static_cast<int64_t>(t.size())) == nullptr);
  const std::vector<int64_t> lens = {37, 1, 0, 64, 129, 5, 250, 17};
  const std::vector<int64_t> short_lens = {5, 0, 9, 1, 0};
  for (const auto& t : layouts) {
    const bool wide = t[0] > 200;  // keep the wide layouts' clips short
    for (int C : {2, 3})
      for (bool packed : {false, true})
        for (bool normalize : {false, true})
          for (bool extras : {false, true})
            run_both({t, C, packed, wide ? short_lens : lens, wide ? 12 : 256, normalize, extras,
                      packed ? -1 : 7, false, 5});
  }
  // NaN / inf input, with and without a confidence threshold
  for (bool packed : {false, true}) run_both({layouts[0], 3, packed, lens, 256, true, true, -1, true, 8});
  // row grids smaller than the rows: the element kernels' grid-stride loops
  for (unsigned cap : {1u, 3u}) {
    g_row_grid_cap = cap;
    for (bool packed : {false, true}) run_both({layouts[0], 2, packed, {4, 0, 6, 3}, 8, true, true, -1, false, 9});
  }
  g_row_grid_cap = 0;
  // empty batches' edges: all clips empty; leading / trailing empty clips; one one-frame clip
  for (bool packed : {false, true}) {
    run_both({layouts[0], 3, packed, {0, 0, 0}, 4, true, true, -1, false, 1});
    run_both({layouts[0], 2, packed, {0, 3, 0, 0, 2, 0}, 4, true, true, -1, false, 2});
    run_both({layouts[0], 2, packed, {1}, 1, true, true, -1, false, 3});
  }
  test_sample_kernel_strides_past_its_grid();
  test_unchecked_seqs_stay_inside_the_arrays();
  TEST_MAIN_END();
}
