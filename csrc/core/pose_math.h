// Per-clip and per-joint math of the pose ops, shared verbatim by the CPU loops
// (pose_cpu.cpp) and the CUDA kernels (pose_cuda.cu). Torch-free, header-only, SLP_HD.
//
// All arithmetic is in double and rounded once to the output dtype (float32 or float16 via
// the round-to-nearest-even conversion below), so CPU and CUDA agree to the last bit except
// for the order of the per-clip sums (a difference far below float precision).
//
// Layout (the int32 "layout" tensor built by slpfast/ops/pose.py from slpfast/layouts.py):
//   [0] J   [1] shoulder a   [2] shoulder b   [3] number of parts   [4] number of scale pairs
//   [5..12] scale pairs (a0, b0, a1, b1, ...)   [13..15] zero
//   then four int32[J] tables: anchor, scale_group, flip_perm, part_id.
// anchor[j] = -1: joint j is taken relative to the clip centre (shoulder midpoint), else
// relative to joint anchor[j] in the same frame. scale_group[j] = -1: divided by the clip's
// shoulder width, k >= 0: by the mean length of scale pair k (e.g. wrist-middle_mcp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pose_philox.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
#endif

namespace slpfast {
namespace pose {

constexpr int kHeader = 16;
constexpr int kMaxPairs = 4;
constexpr int kMaxParts = 16;
constexpr int kMaxC = 3;
// A shoulder width (or bounding box, or scale pair) at or below this is treated as absent.
constexpr double kMinScale = 1e-6;
// Per-clip parameters: flip, angle, shear, scale_x, scale_y, tx, ty, speed, part_drop_bits.
constexpr int kNumParams = 9;
constexpr int kNumSampleCfg = 9;  // see SampleConfig

// ---------------------------------------------------------------- float16 <-> float
SLP_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
SLP_HD float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

SLP_HD float half_to_float_bits(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {  // zero or subnormal: m * 2^-24 is exact in float
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

// float -> float16 bits, round to nearest even; overflow to +-inf, NaN stays NaN.
SLP_HD uint16_t float_to_half_bits(float f) {
  const uint32_t x = f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {                                                  // below 2^-14: subnormal
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);              // below 2^-25: zero
    const uint32_t e = ax >> 23, mant = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t s = 126u - e;  // 14..24
    uint32_t r = mant >> s;
    const uint32_t rem = mant & ((1u << s) - 1u), halfway = 1u << (s - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry rolls into the exponent
  return static_cast<uint16_t>(sign | h);
}

// Branch-free versions of the same two conversions (after Maratos' FP16 library): exact, the
// float arithmetic only moves bits (the addition does the round-to-nearest-even). 3-4x faster
// on the CPU, where they are used. The device uses its conversion instructions (one cvt each,
// against ~25 integer instructions for float_to_half_bits in the element kernels' inner path):
// cvt.rn.f16.f32 rounds to nearest even with subnormals and overflow to inf exactly as these
// do; only NaN payloads may differ, and a NaN is never stored (see store()).
// tests/cpp checks the bit versions against the fast ones over every half and a sweep of floats.
SLP_HD float half_to_float_fast(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = bits_f32((two_w >> 4) + (0xE0u << 23)) * 1.925929944387236e-34f;  // 2^-112
  const float denormalized = bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t sub = 0u - static_cast<uint32_t>(two_w < (1u << 27));  // mask select: vectorizes
  return bits_f32(sign | (sub & f32_bits(denormalized)) | (~sub & f32_bits(normalized)));
}

SLP_HD uint16_t float_to_half_fast(float f) {
  // Selects written as masks so that loops over arrays vectorize.
  const float base0 = (fabsf(f) * 5.192296858534828e+33f) * 7.703719777548943e-34f;  // 2^112, 2^-110
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t raw_bias = shl1_w & 0xFF000000u;
  const uint32_t low = 0u - static_cast<uint32_t>(raw_bias < 0x71000000u);
  const uint32_t bias = (low & 0x71000000u) | (~low & raw_bias);
  const uint32_t bits = f32_bits(bits_f32((bias >> 1) + 0x07800000u) + base0);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  const uint32_t nan = 0u - static_cast<uint32_t>(shl1_w > 0xFF000000u);
  return static_cast<uint16_t>((sign >> 16) | (nan & 0x7E00u) | (~nan & nonsign));
}

SLP_HD float half_to_float(uint16_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(h));
#else
  return half_to_float_fast(h);
#endif
}

SLP_HD uint16_t float_to_half(float f) {
#ifdef __CUDA_ARCH__
  return __half_as_ushort(__float2half_rn(f));
#else
  return float_to_half_fast(f);
#endif
}

// Finiteness from the bits: the same on host and device, immune to fast-math flags.
SLP_HD bool finite(double x) {
  uint64_t u;
  memcpy(&u, &x, 8);
  return (u & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

// Element access for the two supported storage types (float, and float16 stored as uint16_t).
SLP_HD double load(const float* p, int64_t i) { return static_cast<double>(p[i]); }
SLP_HD double load(const uint16_t* p, int64_t i) { return static_cast<double>(half_to_float(p[i])); }
// Rounds to the storage type; returns false when the stored value is not finite.
SLP_HD bool store(float* p, int64_t i, double v) {
  const float f = static_cast<float>(v);
  p[i] = f;
  return finite(static_cast<double>(f));
}
SLP_HD bool store(uint16_t* p, int64_t i, double v) {
  const uint16_t h = float_to_half(static_cast<float>(v));
  p[i] = h;
  return (h & 0x7c00u) != 0x7c00u;
}

// ---------------------------------------------------------------- layout and sequences
struct Layout {
  int J, sa, sb, num_parts, num_pairs;
  int pairs[2 * kMaxPairs];
  const int32_t* anchor;
  const int32_t* scale_group;
  const int32_t* flip_perm;
  const int32_t* part_id;
};

// `table` points at the int32 layout tensor (host or device memory: only the pointers to the
// four tables are taken from it, the header is read from `header`, always host memory).
inline Layout make_layout(const int32_t* header, const int32_t* table) {
  Layout L;
  L.J = header[0];
  L.sa = header[1];
  L.sb = header[2];
  L.num_parts = header[3];
  L.num_pairs = header[4];
  for (int k = 0; k < 2 * kMaxPairs; ++k) L.pairs[k] = header[5 + k];
  L.anchor = table + kHeader;
  L.scale_group = table + kHeader + L.J;
  L.flip_perm = table + kHeader + 2 * L.J;
  L.part_id = table + kHeader + 3 * L.J;
  return L;
}

// Clips as rows of a (rows, J, C) array. Padded (cap >= 0): clip b owns rows
// [b*cap, b*cap + cap), its first len[b] valid; `seq` holds lengths (B,). Packed (cap < 0):
// `seq` holds cu_seqlens (B+1,), clip b owns rows [cu[b], cu[b+1]).
struct Seqs {
  const int64_t* seq;
  int64_t cap;
  SLP_HD int64_t start(int64_t b) const { return cap >= 0 ? b * cap : seq[b]; }
  SLP_HD int64_t len(int64_t b) const { return cap >= 0 ? seq[b] : seq[b + 1] - seq[b]; }
  SLP_HD int64_t rows_owned(int64_t b) const { return cap >= 0 ? cap : seq[b + 1] - seq[b]; }
};

// ---------------------------------------------------------------- validity and statistics
// A confidence marks its joint valid when it is above `thr` and finite: NaN fails the
// comparison, and +inf is rejected as well, since interpolating it (augment_pose's resampling,
// c0 + w * (c1 - c0)) gives NaN, and passing it through would hand the model an inf. Every
// validity test (CPU scalar, CPU AVX2 and CUDA paths) goes through this one function.
SLP_HD bool conf_valid(float c, double thr) { return static_cast<double>(c) > thr && finite(c); }

// Joint (row, j) is valid when its confidence is valid (above `thr`, finite) and every
// coordinate is finite.
template <typename T>
SLP_HD bool load_joint(const T* pose, const float* conf, int64_t row, int j, int J, int C, double thr,
                       double out[kMaxC]) {
  if (!conf_valid(conf[row * J + j], thr)) return false;
  const int64_t base = (row * J + j) * C;
  for (int k = 0; k < C; ++k) {
    out[k] = load(pose, base + k);
    if (!finite(out[k])) return false;
  }
  return true;
}

// Sums over the frames of one clip; merged across threads on the GPU.
struct StatsAcc {
  double c[kMaxC];  // sum of shoulder midpoints
  double d;         // sum of shoulder distances
  double n;         // frames with both shoulders valid
  double pd[kMaxPairs], pn[kMaxPairs];
};
struct BoxAcc {
  double lo[kMaxC], hi[kMaxC];
  double n;
};

SLP_HD void stats_zero(StatsAcc* a) {
  for (int k = 0; k < kMaxC; ++k) a->c[k] = 0.0;
  a->d = a->n = 0.0;
  for (int k = 0; k < kMaxPairs; ++k) a->pd[k] = a->pn[k] = 0.0;
}
SLP_HD void box_zero(BoxAcc* a) {
  for (int k = 0; k < kMaxC; ++k) {
    a->lo[k] = INFINITY;
    a->hi[k] = -INFINITY;
  }
  a->n = 0.0;
}

SLP_HD double dist(const double* p, const double* q, int C) {
  double s = 0.0;
  for (int k = 0; k < C; ++k) s += (p[k] - q[k]) * (p[k] - q[k]);
  return sqrt(s);
}

// Adds frame `row` (absolute row index) to the shoulder and scale-pair sums.
template <typename T>
SLP_HD void stats_add_frame(StatsAcc* a, const Layout& L, const T* pose, const float* conf, int64_t row,
                            int C, double thr) {
  double p[kMaxC], q[kMaxC];
  if (load_joint(pose, conf, row, L.sa, L.J, C, thr, p) && load_joint(pose, conf, row, L.sb, L.J, C, thr, q)) {
    for (int k = 0; k < C; ++k) a->c[k] += 0.5 * (p[k] + q[k]);
    a->d += dist(p, q, C);
    a->n += 1.0;
  }
  for (int k = 0; k < L.num_pairs; ++k) {
    if (load_joint(pose, conf, row, L.pairs[2 * k], L.J, C, thr, p) &&
        load_joint(pose, conf, row, L.pairs[2 * k + 1], L.J, C, thr, q)) {
      a->pd[k] += dist(p, q, C);
      a->pn[k] += 1.0;
    }
  }
}

template <typename T>
SLP_HD void box_add_joint(BoxAcc* a, const T* pose, const float* conf, int64_t row, int j, int J, int C,
                          double thr) {
  double p[kMaxC];
  if (!load_joint(pose, conf, row, j, J, C, thr, p)) return;
  for (int k = 0; k < C; ++k) {
    a->lo[k] = fmin(a->lo[k], p[k]);
    a->hi[k] = fmax(a->hi[k], p[k]);
  }
  a->n += 1.0;
}

SLP_HD void stats_merge(StatsAcc* a, const StatsAcc& b) {
  for (int k = 0; k < kMaxC; ++k) a->c[k] += b.c[k];
  a->d += b.d;
  a->n += b.n;
  for (int k = 0; k < kMaxPairs; ++k) {
    a->pd[k] += b.pd[k];
    a->pn[k] += b.pn[k];
  }
}
SLP_HD void box_merge(BoxAcc* a, const BoxAcc& b) {
  for (int k = 0; k < kMaxC; ++k) {
    a->lo[k] = fmin(a->lo[k], b.lo[k]);
    a->hi[k] = fmax(a->hi[k], b.hi[k]);
  }
  a->n += b.n;
}

// One centre and one scale per clip (plus one scale per scale pair).
struct ClipNorm {
  double centre[kMaxC];
  double inv_scale;              // 1 / shoulder width (or 1 / bounding-box size)
  double inv_pair[kMaxPairs];    // 1 / mean pair length; falls back to inv_scale
  int fallback;                  // 0: shoulders, 1: bounding box, 2: nothing valid (identity)
};

// True when the shoulders cannot define the clip frame and the bounding box is needed.
SLP_HD bool needs_box(const StatsAcc& a) { return !(a.n > 0.0 && a.d / a.n > kMinScale); }

// Shoulders: centre = mean midpoint, scale = mean distance (pose-format's normalize).
// Fallback (no frame with both shoulders): centre = bounding-box centre of every valid joint
// of the clip, scale = the larger of its x and y extents; with no valid joint (or a box of
// size <= kMinScale) the scale is 1, and the centre 0 when nothing is valid.
SLP_HD ClipNorm finalize_norm(const StatsAcc& a, const BoxAcc* box, int C) {
  ClipNorm out;
  for (int k = 0; k < kMaxC; ++k) out.centre[k] = 0.0;
  out.inv_scale = 1.0;
  if (!needs_box(a)) {
    for (int k = 0; k < C; ++k) out.centre[k] = a.c[k] / a.n;
    out.inv_scale = a.n / a.d;
    out.fallback = 0;
  } else if (box != nullptr && box->n > 0.0) {
    for (int k = 0; k < C; ++k) out.centre[k] = 0.5 * (box->lo[k] + box->hi[k]);
    const double size = fmax(box->hi[0] - box->lo[0], box->hi[1] - box->lo[1]);
    out.inv_scale = size > kMinScale ? 1.0 / size : 1.0;
    out.fallback = 1;
  } else {
    out.fallback = 2;
  }
  for (int k = 0; k < kMaxPairs; ++k) {
    const bool ok = a.pn[k] > 0.0 && a.pd[k] / a.pn[k] > kMinScale;
    out.inv_pair[k] = ok ? a.pn[k] / a.pd[k] : out.inv_scale;
  }
  return out;
}

// Normalized joint (row, j). Invalid when the joint or its anchor (same frame) is invalid.
template <typename T>
SLP_HD bool norm_joint(const Layout& L, const ClipNorm& N, const T* pose, const float* conf, int64_t row,
                       int j, int C, double thr, double out[kMaxC]) {
  double p[kMaxC], ref[kMaxC];
  if (!load_joint(pose, conf, row, j, L.J, C, thr, p)) return false;
  const int a = L.anchor[j];
  if (a < 0) {
    for (int k = 0; k < C; ++k) ref[k] = N.centre[k];
  } else if (!load_joint(pose, conf, row, a, L.J, C, thr, ref)) {
    return false;
  }
  const int g = L.scale_group[j];
  const double inv = g < 0 ? N.inv_scale : N.inv_pair[g];
  for (int k = 0; k < C; ++k) out[k] = (p[k] - ref[k]) * inv;
  return true;
}

}  // namespace pose
}  // namespace slpfast
