// Unit tests of the torch-free pose core (csrc/core/pose_*.h): Philox known-answer vectors,
// float16 conversion, per-clip normalization (shoulders, anchors, bounding-box fallback,
// invalid input) and the augmentation transform on hand-computed cases.
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "check.h"
#include "pose_api.h"

using namespace slpfast::pose;

static void test_philox_kat() {
  // Random123 kat_vectors, philox4x32 with 10 rounds.
  U32x4 c0 = {{0, 0, 0, 0}};
  U32x4 r = philox4x32_10(c0, 0, 0);
  CHECK(r.v[0] == 0x6627e8d5u && r.v[1] == 0xe169c58du && r.v[2] == 0xbc57ac4cu && r.v[3] == 0x9b00dbd8u);
  U32x4 c1 = {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}};
  r = philox4x32_10(c1, 0xffffffffu, 0xffffffffu);
  CHECK(r.v[0] == 0x408f276du && r.v[1] == 0x41c83b0eu && r.v[2] == 0xa20bc7c6u && r.v[3] == 0x6d5451fdu);
  U32x4 c2 = {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
  r = philox4x32_10(c2, 0xa4093822u, 0x299f31d0u);
  CHECK(r.v[0] == 0xd16cfe09u && r.v[1] == 0x94fdccebu && r.v[2] == 0x5001e420u && r.v[3] == 0x24126ea1u);
  CHECK(u01(0) > 0.0 && u01(0xffffffffu) < 1.0);
}

static void test_jitter_normals() {
  // The float uniforms are exact (k + 1/2) 2^-23 inside (0, 1), and the float Box-Muller of
  // the jitter equals the double one on the same uniforms to float precision.
  CHECK(u01f(0) == std::ldexp(1.0f, -24) && u01f(0xffffffffu) == 1.0f - std::ldexp(1.0f, -24));
  CHECK(u01f(0x80000000u) == 0.5f + std::ldexp(1.0f, -24));
  double worst = 0.0;
  for (uint32_t i = 0; i < 4096; ++i) {
    const U32x4 r = draw(7, 11, kStreamJitter, i);
    float z0, z1;
    box_muller_f(r.v[0], r.v[1], &z0, &z1);
    const double u0 = u01f(r.v[0]), u1 = u01f(r.v[1]);
    const double rad = std::sqrt(-2.0 * std::log(u0)), th = 6.283185307179586 * u1;
    CHECK(std::isfinite(z0) && std::isfinite(z1));
    worst = std::max(worst, std::max(std::fabs(z0 - rad * std::cos(th)), std::fabs(z1 - rad * std::sin(th))));
  }
  CHECK(worst < 4e-6);  // |z| < 6: a few float ulps
}

static void test_half() {
  // Every finite half survives half -> float -> half.
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7c00u) == 0x7c00u) continue;
    if (float_to_half(half_to_float(static_cast<uint16_t>(h))) != h) ++bad;
  }
  CHECK(bad == 0);
  CHECK(half_to_float(0x3c00) == 1.0f && half_to_float(0xc000) == -2.0f && half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie -> even
  CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie -> even (up)
  CHECK(float_to_half(65519.0f) == 0x7bff && float_to_half(65520.0f) == 0x7c00);
  CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0 && float_to_half(std::ldexp(1.5f, -25)) == 1);
  CHECK((float_to_half(NAN) & 0x7fffu) > 0x7c00u);
  // The branch-free CPU conversions equal the integer (device) ones: every half, every tie and
  // its neighbours, and a stride through all float bit patterns.
  int diff = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t hh = static_cast<uint16_t>(h);
    const float a = half_to_float_bits(hh), b = half_to_float_fast(hh);
    if (f32_bits(a) != f32_bits(b) && !(std::isnan(a) && std::isnan(b))) ++diff;  // NaN payloads may differ
    const float next = half_to_float_bits(static_cast<uint16_t>(h + 1));
    if ((h & 0x7c00u) == 0x7c00u || ((h + 1) & 0x7c00u) == 0x7c00u || ((h ^ (h + 1)) & 0x8000u)) continue;
    const float mid = 0.5f * (a + next);
    for (float f : {a, mid, std::nextafter(mid, a), std::nextafter(mid, next)})
      if (float_to_half_bits(f) != float_to_half_fast(f)) ++diff;
  }
  for (uint64_t u = 0; u < (1ull << 32); u += 8191) {
    const float f = bits_f32(static_cast<uint32_t>(u));
    const uint16_t a = float_to_half_bits(f), b = float_to_half_fast(f);
    const bool both_nan = (a & 0x7fffu) > 0x7c00u && (b & 0x7fffu) > 0x7c00u;
    if (a != b && !both_nan) ++diff;
  }
  CHECK(diff == 0);
}

// A tiny layout: J = 6. Joints 0, 1 shoulders (part 0), 2 wrist + 3 finger (part 1, relative
// to joint 2, scale pair 0 = (2, 3)), 4 nose + 5 mouth (part 2, relative to joint 4).
// Flip swaps 0 <-> 1.
static std::vector<int32_t> tiny_layout(bool hand_scale) {
  const int J = 6;
  std::vector<int32_t> t(kHeader + 4 * J, 0);
  t[0] = J;
  t[1] = 0;
  t[2] = 1;
  t[3] = 3;
  t[4] = 1;
  t[5] = 2;
  t[6] = 3;
  const int32_t anchor[J] = {-1, -1, 2, 2, 4, 4};
  const int32_t perm[J] = {1, 0, 2, 3, 4, 5};
  const int32_t part[J] = {0, 0, 1, 1, 2, 2};
  for (int j = 0; j < J; ++j) {
    t[kHeader + j] = anchor[j];
    t[kHeader + J + j] = (hand_scale && (j == 2 || j == 3)) ? 0 : -1;
    t[kHeader + 2 * J + j] = perm[j];
    t[kHeader + 3 * J + j] = part[j];
  }
  return t;
}

static void test_normalize() {
  std::vector<int32_t> table = tiny_layout(true);
  CHECK(check_layout(table.data(), static_cast<int64_t>(table.size())) == nullptr);
  const Layout L = make_layout(table.data(), table.data());
  // Two frames, C = 2. Shoulders (0,0)-(2,0) then (2,0)-(4,0): centre (2,0), width 2.
  const float pose[2][6][2] = {{{0, 0}, {2, 0}, {1, 1}, {1, 2}, {1, -1}, {1, -2}},
                               {{2, 0}, {4, 0}, {3, 1}, {3, 4}, {NAN, 0}, {3, -2}}};
  const float conf[2][6] = {{1, 1, 1, 1, 1, 0.5f}, {1, 1, 1, 1, 1, 1}};
  float out[2][6][2];
  float out_conf[2][6];
  double info[5];
  const int64_t lengths[1] = {2};
  NormalizeArgs a{&pose[0][0][0], &conf[0][0], &out[0][0][0], &out_conf[0][0], Seqs{lengths, 2}, 1, 2, false,
                  0.0, L, info};
  normalize_cpu(a, 0, 1);
  CHECK_NEAR(info[0], 2.0, 1e-12);
  CHECK_NEAR(info[1], 0.0, 1e-12);
  CHECK_NEAR(info[3], 2.0, 1e-12);
  CHECK(info[4] == 0.0);
  CHECK_NEAR(out[0][0][0], -1.0, 1e-7);  // (0 - 2) / 2
  CHECK_NEAR(out[1][1][0], 1.0, 1e-7);   // (4 - 2) / 2
  // Hand: relative to the wrist, scaled by mean wrist-finger length (1 and 3 -> 2).
  CHECK_NEAR(out[0][3][1], 0.5, 1e-7);
  CHECK_NEAR(out[1][3][1], 1.5, 1e-7);
  CHECK_NEAR(out[0][2][0], 0.0, 1e-7);
  // Mouth relative to the nose, body scale; frame 1's nose is NaN: nose and mouth flagged.
  CHECK_NEAR(out[0][5][1], -0.5, 1e-7);
  CHECK(out_conf[0][5] == 0.5f);
  CHECK(out_conf[1][4] == 0.0f && out_conf[1][5] == 0.0f);
  CHECK(out[1][4][0] == 0.0f && out[1][5][1] == 0.0f);
}

static void test_fallbacks() {
  std::vector<int32_t> table = tiny_layout(false);
  const Layout L = make_layout(table.data(), table.data());
  // Left shoulder never valid: bounding box of the valid joints, x in [0, 4], y in [-1, 1].
  const float pose[1][6][2] = {{{9, 9}, {0, 0}, {4, 1}, {2, 0}, {2, -1}, {1, 0}}};
  const float conf[1][6] = {{0, 1, 1, 1, 1, 1}};
  float out[1][6][2];
  float out_conf[1][6];
  double info[5];
  const int64_t lengths[1] = {1};
  NormalizeArgs a{&pose[0][0][0], &conf[0][0], &out[0][0][0], &out_conf[0][0], Seqs{lengths, 1}, 1, 2, false,
                  0.0, L, info};
  normalize_cpu(a, 0, 1);
  CHECK(info[4] == 1.0);
  CHECK_NEAR(info[0], 2.0, 1e-12);
  CHECK_NEAR(info[3], 4.0, 1e-12);
  CHECK_NEAR(out[0][1][0], -0.5, 1e-7);
  CHECK(out_conf[0][0] == 0.0f && out[0][0][0] == 0.0f);
  // Nothing valid: identity frame, everything flagged, no NaN.
  const float zero_conf[1][6] = {{0, 0, 0, 0, 0, 0}};
  NormalizeArgs z = a;
  z.conf = &zero_conf[0][0];
  normalize_cpu(z, 0, 1);
  CHECK(info[4] == 2.0 && info[3] == 1.0);
  for (int j = 0; j < 6; ++j) CHECK(out_conf[0][j] == 0.0f && out[0][j][0] == 0.0f && out[0][j][1] == 0.0f);
}

static void test_augment() {
  std::vector<int32_t> table = tiny_layout(false);
  const Layout L = make_layout(table.data(), table.data());
  const int T = 5, J = 6, C = 2;
  std::vector<float> pose(T * J * C), conf(T * J, 1.0f);
  for (int i = 0; i < T * J * C; ++i) pose[i] = 0.25f * static_cast<float>(i % 17) - 1.0f;
  // Speed 2: 5 frames -> round(2.5 + 0.5) = 3 frames = input frames 0, 2, 4.
  CHECK(resampled_length(5, 2.0) == 3 && resampled_length(1, 3.0) == 1 && resampled_length(0, 1.0) == 0);
  // flip, angle pi/2, shear 0, sx 1, sy 1, tx 0.5, ty 0, speed 2, no dropped part.
  const double params[kNumParams] = {1.0, M_PI / 2, 0.0, 1.0, 1.0, 0.5, 0.0, 2.0, 0.0};
  const int64_t in_len[1] = {T}, out_len[1] = {3}, ids[1] = {7};
  std::vector<float> out(3 * J * C), out_conf(3 * J);
  AugmentArgs a{pose.data(), conf.data(), out.data(), out_conf.data(), Seqs{in_len, T}, Seqs{out_len, 3}, 1, C,
                false, params, ids, 1234, ElemConfig{0.0, 0.0, 0.0}, false, 0.0, L};
  augment_cpu(a, 0, 1);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < J; ++j) {
      const int src = j == 0 ? 1 : (j == 1 ? 0 : j);
      const double x = -pose[((2 * i) * J + src) * C], y = pose[((2 * i) * J + src) * C + 1];
      // p @ [[c, -s], [s, c]] with c = 0, s = 1: (x, y) -> (y, -x), then + (0.5, 0).
      CHECK_NEAR(out[(i * J + j) * C], y + 0.5, 1e-6);
      CHECK_NEAR(out[(i * J + j) * C + 1], -x, 1e-6);
      CHECK(out_conf[i * J + j] == 1.0f);
    }
  }
  // Dropping part 1 (the hand) and every frame.
  double drop[kNumParams] = {0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 2.0};
  a.params = drop;
  augment_cpu(a, 0, 1);
  CHECK(out_conf[2] == 0.0f && out_conf[3] == 0.0f && out_conf[0] == 1.0f && out[2 * C] == 0.0f);
  a.elem.frame_drop_p = 1.0;
  augment_cpu(a, 0, 1);
  for (float c : out_conf) CHECK(c == 0.0f);
  // Sampling is a pure function of (seed, clip): same clip id, same parameters.
  const double cfg[kNumSampleCfg] = {0.5, 0.2, 0.2, 0.2, 0.0, 0.1, 0.8, 1.2, 0.3};
  const int64_t clips[3] = {5, 9, 5};
  double p[3 * kNumParams];
  sample_params_cpu(clips, 0, 3, 42, cfg, 3, p);
  for (int k = 0; k < kNumParams; ++k) CHECK(p[k] == p[2 * kNumParams + k]);
  CHECK(p[3] == 1.0 && p[7] >= 0.8 && p[7] <= 1.2);
  CHECK(p[1] != p[kNumParams + 1]);
}

// params[8], the part-drop bit mask, comes straight from the raw op's params tensor: a value
// outside uint32's range (negative, >= 2^32, NaN) made the double -> uint32 conversion
// undefined (x86 gave 0: no part dropped; a GPU saturates). It is defined, as the GPU's
// saturating conversion: NaN and negatives drop nothing, values >= 2^32 every part.
static void test_part_bits_conversion() {
  const double cases[][2] = {{0.0, 0.0}, {5.0, 5.0}, {4294967295.0, 4294967295.0}, {-1.0, 0.0},
                             {-1e30, 0.0}, {NAN, 0.0}, {4294967296.0, 4294967295.0}, {1e30, 4294967295.0},
                             {INFINITY, 4294967295.0}, {-INFINITY, 0.0}};
  for (const auto& c : cases) {
    volatile double v = c[0];  // not constant-folded: the compiler saturates folded conversions
    double params[kNumParams] = {0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, v};
    ClipPlan P;
    plan_affine(&P, params);
    CHECK(static_cast<double>(P.part_bits) == c[1]);
  }
}

// The AVX2/F16C entry points (picked at run time) and the baseline ones give identical bits.
// fused: speed 1 and no jitter / joint or frame dropout, the case with its own single pass
// (augment_row_fast); otherwise resampling, jitter and dropout through the generic loops.
static void test_simd_matches_baseline(bool fused) {
  std::vector<int32_t> table = tiny_layout(true);
  const Layout L = make_layout(table.data(), table.data());
  const int B = 3, T = 37, J = 6, C = 3;
  std::vector<uint16_t> pose(B * T * J * C);
  std::vector<float> conf(B * T * J);
  uint32_t state = 12345u;
  auto next = [&state]() { state = state * 1664525u + 1013904223u; return state; };
  for (auto& h : pose) h = float_to_half(static_cast<float>(next() % 20000) * 0.05f - 500.0f);
  for (auto& c : conf) c = (next() % 10 == 0) ? 0.0f : static_cast<float>(next() % 1000) / 1000.0f;
  pose[7] = 0x7e00;  // a NaN coordinate
  const int64_t lengths[B] = {37, 1, 20}, ids[B] = {3, 4, 5};
  double params[B * kNumParams];
  const double speed_min = fused ? 1.0 : 0.6, speed_max = fused ? 1.0 : 1.5;
  const double cfg[kNumSampleCfg] = {0.5, 0.3, 0.2, 0.2, 0.0, 0.1, speed_min, speed_max, 0.2};
  sample_params_cpu(ids, 0, B, 99, cfg, 3, params);
  const ElemConfig elem = fused ? ElemConfig{0.0, 0.0, 0.0} : ElemConfig{0.01, 0.05, 0.05};
  int64_t out_len[B];
  for (int b = 0; b < B; ++b) out_len[b] = std::min<int64_t>(resampled_length(lengths[b], params[b * kNumParams + 7]), 64);
  std::vector<uint16_t> out[2];
  std::vector<float> oc[2];
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) setenv("SLPFAST_POSE_NO_SIMD", "1", 1);
    out[pass].assign(B * 64 * J * C, 1);
    oc[pass].assign(B * 64 * J, 1.0f);
    AugmentArgs a{pose.data(), conf.data(), out[pass].data(), oc[pass].data(), Seqs{lengths, T}, Seqs{out_len, 64},
                  B, C, true, params, ids, 7, elem, true, 0.0, L};
    augment_cpu(a, 0, B);
  }
  unsetenv("SLPFAST_POSE_NO_SIMD");
  CHECK(out[0] == out[1]);
  CHECK(oc[0] == oc[1]);
}

// The per-joint functions the CUDA kernels run (augment_joint, normalize_joint_out, with the
// ClipPlan that plan_kernel builds) give the same bits on the host as the CPU frame loops.
static void test_device_path_matches_cpu_path() {
  std::vector<int32_t> table = tiny_layout(true);
  const Layout L = make_layout(table.data(), table.data());
  const int B = 4, T = 29, J = 6, C = 2, OUT = 64;
  std::vector<float> pose(B * T * J * C), conf(B * T * J);
  uint32_t state = 777u;
  auto next = [&state]() { state = state * 1664525u + 1013904223u; return state >> 8; };
  for (auto& v : pose) v = static_cast<float>(next() % 100000) * 0.01f - 500.0f;
  for (auto& c : conf) c = (next() % 8 == 0) ? 0.0f : 0.5f + static_cast<float>(next() % 100) / 200.0f;
  for (int t = 0; t < T; ++t) conf[(3 * T + t) * J + 0] = 0.0f;  // clip 3: bounding-box fallback
  const int64_t lengths[B] = {29, 1, 0, 17}, ids[B] = {10, 11, 12, 13};
  double params[B * kNumParams];
  const double cfg[kNumSampleCfg] = {0.5, 0.3, 0.2, 0.2, 1.0, 0.1, 0.5, 2.0, 0.2};
  sample_params_cpu(ids, 0, B, 5, cfg, 3, params);
  params[7] = 1.0;  // clip 0 not resampled (the CPU direct path)
  int64_t out_len[B];
  for (int b = 0; b < B; ++b) out_len[b] = std::min<int64_t>(resampled_length(lengths[b], params[b * kNumParams + 7]), OUT);
  const ElemConfig E{0.02, 0.1, 0.05};
  for (int normalize = 0; normalize < 2; ++normalize) {
    std::vector<float> cpu(B * OUT * J * C), dev(B * OUT * J * C), cpu_c(B * OUT * J), dev_c(B * OUT * J);
    AugmentArgs a{pose.data(), conf.data(), cpu.data(), cpu_c.data(), Seqs{lengths, T}, Seqs{out_len, OUT}, B, C,
                  false, params, ids, 3, E, normalize != 0, 0.0, L};
    augment_cpu(a, 0, B);
    for (int b = 0; b < B; ++b) {  // what plan_kernel + augment_kernel do
      ClipPlan P;
      StatsAcc acc;
      stats_zero(&acc);
      for (int t = 0; t < lengths[b]; ++t) stats_add_frame(&acc, L, pose.data(), conf.data(), b * T + t, C, 0.0);
      BoxAcc box;
      box_zero(&box);
      for (int e = 0; e < lengths[b] * J; ++e)
        box_add_joint(&box, pose.data(), conf.data(), b * T + e / J, e % J, J, C, 0.0);
      P.norm = finalize_norm(acc, needs_box(acc) ? &box : nullptr, C);
      P.in_start = b * T;
      P.in_len = lengths[b];
      P.out_start = b * OUT;
      P.out_rows = OUT;
      P.out_len = out_len[b];
      P.clip_id = static_cast<uint64_t>(ids[b]);
      plan_affine(&P, params + b * kNumParams);
      for (int i = 0; i < OUT; ++i)
        for (int j = 0; j < J; ++j) {
          const int64_t k = (b * OUT + i) * J + j;
          dev_c[k] = normalize ? augment_joint<float, true>(L, P, E, 3, pose.data(), conf.data(), i, j, C, 0.0,
                                                            dev.data(), k * C)
                               : augment_joint<float, false>(L, P, E, 3, pose.data(), conf.data(), i, j, C, 0.0,
                                                             dev.data(), k * C);
        }
    }
    CHECK(cpu == dev);
    CHECK(cpu_c == dev_c);
    int valid = 0;
    for (float c : cpu_c) valid += c > 0.0f;
    CHECK(valid > 100);
  }
  // normalize_pose: normalize_kernel's per-joint function vs the CPU frames.
  std::vector<float> cpu(B * T * J * C), dev(B * T * J * C, 0.0f), cpu_c(B * T * J), dev_c(B * T * J, 0.0f);
  NormalizeArgs n{pose.data(), conf.data(), cpu.data(), cpu_c.data(), Seqs{lengths, T}, B, C, false, 0.0, L, nullptr};
  normalize_cpu(n, 0, B);
  for (int b = 0; b < B; ++b) {
    StatsAcc acc;
    stats_zero(&acc);
    for (int t = 0; t < lengths[b]; ++t) stats_add_frame(&acc, L, pose.data(), conf.data(), b * T + t, C, 0.0);
    BoxAcc box;
    box_zero(&box);
    for (int e = 0; e < lengths[b] * J; ++e) box_add_joint(&box, pose.data(), conf.data(), b * T + e / J, e % J, J, C, 0.0);
    const ClipNorm N = finalize_norm(acc, needs_box(acc) ? &box : nullptr, C);
    for (int t = 0; t < lengths[b]; ++t)
      for (int j = 0; j < J; ++j)
        dev_c[(b * T + t) * J + j] = normalize_joint_out(L, N, pose.data(), conf.data(), b * T + t, j, C, 0.0, dev.data());
  }
  CHECK(cpu == dev);
  CHECK(cpu_c == dev_c);
}

int main() {
  test_simd_matches_baseline(false);
  test_simd_matches_baseline(true);
  test_device_path_matches_cpu_path();
  test_philox_kat();
  test_jitter_normals();
  test_half();
  test_normalize();
  test_fallbacks();
  test_augment();
  test_part_bits_conversion();
  TEST_MAIN_END();
}
