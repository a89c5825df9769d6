// CPU-only building blocks of pose_cpu.cpp: whole frames in structure-of-arrays form, processed
// with branch-free loops over the J joints (the compiler vectorizes most of them).
//
// The arithmetic is exactly that of the per-joint functions shared with CUDA (norm_joint,
// combine, transform_joint in pose_math.h / pose_augment.h): the same double expressions in
// the same order, with selects in place of branches; only the order of the work differs.
// Tests compare the two paths (CPU vs the numpy reference, CPU vs CUDA).
#pragma once

#include <algorithm>
#include <vector>

#include "pose_augment.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SLP_X86_SIMD 1
#include <immintrin.h>
#define SLP_AVX2 __attribute__((target("avx2,f16c")))
#else
#define SLP_X86_SIMD 0
#define SLP_AVX2
#endif
// Everything below is inlined into the per-ISA entry points of pose_cpu.cpp (one compiled for
// the baseline, one with AVX2 + F16C chosen at run time), so each gets its own vector code.
// No FMA is enabled: contraction would change the double arithmetic.
#define SLP_CPU_INLINE __attribute__((always_inline)) inline

namespace slpfast {
namespace pose {
namespace cpu {

// Contiguous conversion loops; kF16C uses the hardware conversions (exact and round-to-nearest-
// even like the software ones, which tests check).
template <bool kF16C>
SLP_CPU_INLINE void convert_in(const float* p, double* v, int n) {
  for (int e = 0; e < n; ++e) v[e] = static_cast<double>(p[e]);
}
template <bool kF16C>
SLP_CPU_INLINE void convert_out(const double* v, float* p, int n) {
  for (int e = 0; e < n; ++e) p[e] = static_cast<float>(v[e]);
}
#if SLP_X86_SIMD
SLP_AVX2 inline void convert_in_f16c(const uint16_t* p, double* v, int n) {
  int e = 0;
  for (; e + 8 <= n; e += 8) {
    const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + e)));
    _mm256_storeu_pd(v + e, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
    _mm256_storeu_pd(v + e + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
  }
  for (; e < n; ++e) v[e] = static_cast<double>(half_to_float(p[e]));
}
SLP_AVX2 inline void convert_out_f16c(const double* v, uint16_t* p, int n) {
  int e = 0;
  for (; e + 8 <= n; e += 8) {
    const __m128 lo = _mm256_cvtpd_ps(_mm256_loadu_pd(v + e)), hi = _mm256_cvtpd_ps(_mm256_loadu_pd(v + e + 4));
    const __m128i h = _mm256_cvtps_ph(_mm256_set_m128(hi, lo), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + e), h);
  }
  for (; e < n; ++e) p[e] = float_to_half(static_cast<float>(v[e]));
}
#endif
template <bool kF16C>
SLP_CPU_INLINE void convert_in(const uint16_t* p, double* v, int n) {
#if SLP_X86_SIMD
  if (kF16C) return convert_in_f16c(p, v, n);
#endif
  for (int e = 0; e < n; ++e) v[e] = static_cast<double>(half_to_float(p[e]));
}
template <bool kF16C>
SLP_CPU_INLINE void convert_out(const double* v, uint16_t* p, int n) {
#if SLP_X86_SIMD
  if (kF16C) return convert_out_f16c(v, p, n);
#endif
  for (int e = 0; e < n; ++e) p[e] = float_to_half(static_cast<float>(v[e]));
}

inline unsigned stored_bad(float x) { return !finite(static_cast<double>(x)); }
inline unsigned stored_bad(uint16_t h) { return (h & 0x7c00u) == 0x7c00u; }

// Joints of a stored AoS row `out` (J x C) whose rounded value is not finite (an fp16 overflow)
// are zeroed and flagged (confidence 0); one pass over the row first, as this is rare.
template <int C, typename T>
SLP_CPU_INLINE void zero_unstorable(int J, T* out, float* out_conf) {
  unsigned any_bad = 0;
  for (int e = 0; e < J * C; ++e) any_bad |= stored_bad(out[e]);
  if (!any_bad) return;
  for (int j = 0; j < J; ++j) {
    unsigned bad = 0;
    for (int k = 0; k < C; ++k) bad |= stored_bad(out[j * C + k]);
    if (!bad) continue;
    for (int k = 0; k < C; ++k) out[j * C + k] = T(0);
    out_conf[j] = 0.0f;
  }
}

// One frame: coordinates, confidence and validity of J joints plus one pseudo-joint (index J)
// that holds the clip centre, so "relative to the centre" is a gather like "relative to joint a".
struct Frame {
  int64_t t = -1;
  std::vector<double> x, y, z, cf;
  std::vector<uint8_t> ok;
  std::vector<double> aos;  // scratch: the J*C values interleaved, for the conversion loops
  explicit Frame(int J) : x(J + 1), y(J + 1), z(J + 1), cf(J + 1), ok(J + 1), aos(3 * (J + 1)) {}
};

// Per-clip joint tables.
struct ClipTables {
  std::vector<int32_t> anc;   // anchor, or J (the centre pseudo-joint)
  std::vector<double> inv;    // 1 / scale of the joint's group
  std::vector<int32_t> src;   // source joint (flip permutation or identity)
  std::vector<uint8_t> keep;  // 0 when the joint's part is dropped for this clip
  explicit ClipTables(int J) : anc(J), inv(J), src(J), keep(J) {}

  void set_norm(const Layout& L, const ClipNorm& N) {
    for (int j = 0; j < L.J; ++j) {
      anc[j] = L.anchor[j] < 0 ? L.J : L.anchor[j];
      inv[j] = L.scale_group[j] < 0 ? N.inv_scale : N.inv_pair[L.scale_group[j]];
    }
  }
  void set_augment(const Layout& L, const ClipPlan& P) {
    for (int j = 0; j < L.J; ++j) {
      src[j] = P.flip ? L.flip_perm[j] : j;
      keep[j] = !((P.part_bits >> L.part_id[j]) & 1u);
    }
  }
};

// Raw frame `row`: validity = conf_valid (> thr, finite) and finite coordinates; invalid joints keep their raw
// values (masked later). The pseudo-joint gets `centre`.
template <typename T, int C, bool kF16C>
SLP_CPU_INLINE void load_frame(int J, const T* pose, const float* conf, int64_t row, double thr, const double* centre,
                               Frame* f) {
  const T* p = pose + row * J * C;
  const float* c = conf + row * J;
  double* v = f->aos.data();
  convert_in<kF16C>(p, v, J * C);
  for (int j = 0; j < J; ++j) {
    f->x[j] = v[j * C];
    f->y[j] = v[j * C + 1];
    f->z[j] = C == 3 ? v[j * C + 2] : 0.0;
  }
  for (int j = 0; j < J; ++j) {
    unsigned good = conf_valid(c[j], thr);
    good &= finite(f->x[j]) & finite(f->y[j]) & finite(f->z[j]);
    f->ok[j] = static_cast<uint8_t>(good);
    f->cf[j] = static_cast<double>(c[j]);
  }
  f->x[J] = centre[0];
  f->y[J] = centre[1];
  f->z[J] = C == 3 ? centre[2] : 0.0;
  f->ok[J] = 1;
  f->cf[J] = 0.0;
}

// out = norm_joint of every joint of `raw` (zeros and cf 0 where invalid).
template <int C>
SLP_CPU_INLINE void normalize_frame(int J, const ClipTables& tb, const Frame& raw, Frame* out) {
  for (int j = 0; j < J; ++j) {
    const int a = tb.anc[j];
    const bool good = raw.ok[j] & raw.ok[a];
    const double inv = tb.inv[j];
    out->x[j] = good ? (raw.x[j] - raw.x[a]) * inv : 0.0;
    out->y[j] = good ? (raw.y[j] - raw.y[a]) * inv : 0.0;
    out->z[j] = good && C == 3 ? (raw.z[j] - raw.z[a]) * inv : 0.0;
    out->ok[j] = good;
    out->cf[j] = good ? raw.cf[j] : 0.0;
  }
}

// Raw source frame with invalid joints zeroed (augment without normalization).
SLP_CPU_INLINE void mask_frame(int J, const Frame& raw, Frame* out) {
  for (int j = 0; j < J; ++j) {
    const bool good = raw.ok[j];
    out->x[j] = good ? raw.x[j] : 0.0;
    out->y[j] = good ? raw.y[j] : 0.0;
    out->z[j] = good ? raw.z[j] : 0.0;
    out->ok[j] = good;
    out->cf[j] = good ? raw.cf[j] : 0.0;
  }
}

// Rounds a frame (values already zero where invalid) into AoS output row `out` / `out_conf`;
// joints whose rounded value is not finite are zeroed and flagged (rare: checked per row).
template <typename T, int C, bool kF16C>
SLP_CPU_INLINE void write_frame(int J, Frame& f, T* out, float* out_conf) {
  double* v = f.aos.data();
  for (int j = 0; j < J; ++j) {
    v[j * C] = f.x[j];
    v[j * C + 1] = f.y[j];
    if (C == 3) v[j * C + 2] = f.z[j];
    out_conf[j] = f.ok[j] ? static_cast<float>(f.cf[j]) : 0.0f;
  }
  convert_out<kF16C>(v, out, J * C);
  zero_unstorable<C>(J, out, out_conf);
}

// Frame and joint dropout and jitter of an output frame (rarely enabled; the same draws as
// dropped() / transform_joint()).
SLP_CPU_INLINE void apply_extras(int J, const ClipPlan& P, const ElemConfig& E, uint64_t seed, int64_t i, int C,
                                 Frame* out) {
  if (!(E.frame_drop_p > 0.0 || E.joint_drop_p > 0.0 || E.jitter_std > 0.0)) return;
  const bool frame_dropped = E.frame_drop_p > 0.0 &&
      u01(draw(seed, P.clip_id, kStreamFrameDrop, static_cast<uint32_t>(i)).v[0]) < E.frame_drop_p;
  for (int j = 0; j < J; ++j) {
    const uint32_t elem = static_cast<uint32_t>(i * J + j);
    bool ok = out->ok[j] && !frame_dropped;
    if (ok && E.joint_drop_p > 0.0) ok = !(u01(draw(seed, P.clip_id, kStreamJointDrop, elem).v[0]) < E.joint_drop_p);
    if (ok && E.jitter_std > 0.0) {
      const U32x4 r = draw(seed, P.clip_id, kStreamJitter, elem);
      float zz[4];
      box_muller_f(r.v[0], r.v[1], &zz[0], &zz[1]);
      if (C == 3) box_muller_f(r.v[2], r.v[3], &zz[2], &zz[3]);  // z only
      out->x[j] += E.jitter_std * zz[0];
      out->y[j] += E.jitter_std * zz[1];
      if (C == 3) out->z[j] += E.jitter_std * zz[2];
    }
    if (!ok && out->ok[j]) {
      out->x[j] = out->y[j] = out->z[j] = out->cf[j] = 0.0;
      out->ok[j] = 0;
    }
  }
}

// Output frame i of a clip from its source frames f0 (and f1 when sp.has1): resampling
// (combine), flip, affine (transform_joint), part / frame / joint dropout and jitter.
SLP_CPU_INLINE void augment_frame(const Layout& L, const ClipPlan& P, const ClipTables& tb, const ElemConfig& E,
                          uint64_t seed, int64_t i, const SourcePos& sp, const Frame& f0, const Frame* f1, int C,
                          Frame* out) {
  const int J = L.J;
  const double w = sp.w;
  const bool near1 = w > 0.5;
  for (int j = 0; j < J; ++j) {
    const int s = tb.src[j];
    double x = f0.x[s], y = f0.y[s], z = f0.z[s], cf = f0.cf[s];
    bool ok = f0.ok[s];
    if (f1 != nullptr) {  // combine(): lerp when both valid, else the nearer frame
      const bool ok1 = f1->ok[s], both = ok && ok1;
      const double x1 = f1->x[s], y1 = f1->y[s], z1 = f1->z[s], c1 = f1->cf[s];
      const double lx = x + w * (x1 - x), ly = y + w * (y1 - y), lz = z + w * (z1 - z), lc = cf + w * (c1 - cf);
      x = both ? lx : (near1 ? x1 : x);
      y = both ? ly : (near1 ? y1 : y);
      z = both ? lz : (near1 ? z1 : z);
      cf = both ? lc : (near1 ? c1 : cf);
      ok = near1 ? ok1 : ok;
    }
    const double fx = P.flip ? -x : x;  // transform_joint()
    const double ox = fx * P.m00 + y * P.m10 + P.tx;
    const double oy = fx * P.m01 + y * P.m11 + P.ty;
    ok = ok && tb.keep[j];
    out->x[j] = ok ? ox : 0.0;
    out->y[j] = ok ? oy : 0.0;
    out->z[j] = ok ? z : 0.0;
    out->cf[j] = ok ? cf : 0.0;
    out->ok[j] = ok;
  }
  apply_extras(J, P, E, seed, i, C, out);
}

// Output frame i when the clip is not resampled (output frame i = source frame i, each read
// once): normalization (as normalize_frame) is applied on the fly to the gathered joint.
template <int C, bool kNormalize>
SLP_CPU_INLINE void augment_frame_direct(const Layout& L, const ClipPlan& P, const ClipTables& tb, const ElemConfig& E,
                                         uint64_t seed, int64_t i, const Frame& raw, Frame* out) {
  const int J = L.J;
  for (int j = 0; j < J; ++j) {
    const int s = tb.src[j];
    double x, y, z;
    bool ok;
    if (kNormalize) {
      const int a = tb.anc[s];
      const double inv = tb.inv[s];
      ok = raw.ok[s] & raw.ok[a];
      x = (raw.x[s] - raw.x[a]) * inv;
      y = (raw.y[s] - raw.y[a]) * inv;
      z = C == 3 ? (raw.z[s] - raw.z[a]) * inv : 0.0;
    } else {
      ok = raw.ok[s];
      x = raw.x[s];
      y = raw.y[s];
      z = raw.z[s];
    }
    const double fx = P.flip ? -x : x;  // transform_joint()
    const double ox = fx * P.m00 + y * P.m10 + P.tx;
    const double oy = fx * P.m01 + y * P.m11 + P.ty;
    ok = ok && tb.keep[j];
    out->x[j] = ok ? ox : 0.0;
    out->y[j] = ok ? oy : 0.0;
    out->z[j] = ok ? z : 0.0;
    out->cf[j] = ok ? raw.cf[s] : 0.0;
    out->ok[j] = ok;
  }
  apply_extras(J, P, E, seed, i, C, out);
}

#if SLP_X86_SIMD
// ---- fused AVX2 path of augment_frame_direct<C, true> for clips without jitter / joint or
// frame dropout (the common training case): one pass per frame straight from the AoS input
// row to the AoS output row, four output joints per step, with no structure-of-arrays copies.
// Per joint the double arithmetic is exactly that of augment_frame_direct (sub, mul by the
// inverse scale, sign flip, (fx*m00 + y*m10) + tx, ...; no FMA), then rounded to float and to
// the storage type as write_frame does, so the output is bit-identical to the generic path.

// Per-clip tables for DirectFast, padded to a multiple of 4 joints (padding lanes read joint 0
// and are masked out).
struct DirectTables {
  int J = 0, Jp = 0;
  std::vector<int32_t> src, anc, src_c, anc_c;  // source joint s, its anchor (J: centre), both * C
  std::vector<double> inv;                      // inverse scale of the source joint
  std::vector<int64_t> keep;                    // all ones when the output joint's part is kept
  explicit DirectTables(int J_) : J(J_), Jp((J_ + 3) & ~3), src(Jp), anc(Jp), src_c(Jp), anc_c(Jp), inv(Jp), keep(Jp) {}
  void set(const ClipTables& tb, int C) {
    for (int j = 0; j < Jp; ++j) {
      const bool real = j < J;
      const int s = real ? tb.src[j] : 0;
      src[j] = s;
      anc[j] = real ? tb.anc[s] : 0;
      src_c[j] = src[j] * C;
      anc_c[j] = anc[j] * C;
      inv[j] = real ? tb.inv[s] : 0.0;
      keep[j] = real && tb.keep[j] ? -1 : 0;
    }
  }
};

// Scratch of one worker.
struct DirectScratch {
  std::vector<double> v;     // converted input row, AoS, plus the centre as joint J
  std::vector<int64_t> ok;   // validity of the J joints (all ones / zero) plus the centre (valid)
  std::vector<float> aos;    // output row, AoS float, padded to a multiple of 4 joints
  explicit DirectScratch(int J) : v(3 * (J + 1) + 8), ok(J + 1 + 4), aos(3 * (J + 8)) {}
};

SLP_AVX2 inline __m256d gather4(const double* base, const int32_t* idx) {
  return _mm256_set_pd(base[idx[3]], base[idx[2]], base[idx[1]], base[idx[0]]);
}
SLP_AVX2 inline __m256i gather4(const int64_t* base, const int32_t* idx) {
  return _mm256_set_epi64x(base[idx[3]], base[idx[2]], base[idx[1]], base[idx[0]]);
}

inline void store_row(const float* f, float* out, int n) { std::copy(f, f + n, out); }
SLP_AVX2 inline void store_row(const float* f, uint16_t* out, int n) {
  int e = 0;
  for (; e + 8 <= n; e += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + e),
                     _mm256_cvtps_ph(_mm256_loadu_ps(f + e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; e < n; ++e) out[e] = float_to_half(f[e]);
}

template <typename T, int C>
SLP_AVX2 inline void augment_row_fast(int J, const DirectTables& dt, const ClipPlan& P, const T* in, const float* conf,
                                      double thr, DirectScratch* sc, T* out, float* out_conf) {
  double* v = sc->v.data();
  int64_t* ok = sc->ok.data();
  convert_in<true>(in, v, J * C);
  for (int k = 0; k < C; ++k) v[J * C + k] = P.norm.centre[k];
  // Validity = conf_valid (> thr, finite) here; finiteness of the coordinates is checked on the normalized
  // values below: (x_s - x_a) * inv is finite exactly when x_s and x_a are (inv is finite and
  // > 0, and a difference of two finite float / half values cannot overflow a double). The
  // check after rounding at the end would zero such joints as well; this keeps the mask explicit.
  for (int j = 0; j < J; ++j) ok[j] = -static_cast<int64_t>(conf_valid(conf[j], thr));
  ok[J] = -1;
  const __m256d m00 = _mm256_set1_pd(P.m00), m01 = _mm256_set1_pd(P.m01), m10 = _mm256_set1_pd(P.m10),
                m11 = _mm256_set1_pd(P.m11), tx = _mm256_set1_pd(P.tx), ty = _mm256_set1_pd(P.ty);
  const __m256d sign = _mm256_set1_pd(P.flip ? -0.0 : 0.0);
  float* aos = sc->aos.data();
  for (int j = 0; j < dt.Jp; j += 4) {
    const int32_t* sc_ = dt.src_c.data() + j;
    const int32_t* ac_ = dt.anc_c.data() + j;
    const __m256d inv = _mm256_loadu_pd(dt.inv.data() + j);
    const __m256d x = _mm256_mul_pd(_mm256_sub_pd(gather4(v, sc_), gather4(v, ac_)), inv);
    const __m256d y = _mm256_mul_pd(_mm256_sub_pd(gather4(v + 1, sc_), gather4(v + 1, ac_)), inv);
    const __m256d z = C == 3 ? _mm256_mul_pd(_mm256_sub_pd(gather4(v + 2, sc_), gather4(v + 2, ac_)), inv)
                             : _mm256_setzero_pd();
    // NaN when any of x, y, z is not finite, else 0.
    const __m256d nf = _mm256_add_pd(_mm256_add_pd(_mm256_sub_pd(x, x), _mm256_sub_pd(y, y)), _mm256_sub_pd(z, z));
    const __m256i good = _mm256_and_si256(
        _mm256_and_si256(gather4(ok, dt.src.data() + j), gather4(ok, dt.anc.data() + j)),
        _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(dt.keep.data() + j)),
                         _mm256_castpd_si256(_mm256_cmp_pd(nf, nf, _CMP_ORD_Q))));
    const __m256d m = _mm256_castsi256_pd(good);
    const __m256d f = _mm256_xor_pd(x, sign);
    const __m256d ox = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(f, m00), _mm256_mul_pd(y, m10)), tx);
    const __m256d oy = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(f, m01), _mm256_mul_pd(y, m11)), ty);
    const __m128 X = _mm256_cvtpd_ps(_mm256_and_pd(ox, m)), Y = _mm256_cvtpd_ps(_mm256_and_pd(oy, m));
    const __m128 lo = _mm_unpacklo_ps(X, Y), hi = _mm_unpackhi_ps(X, Y);  // x0 y0 x1 y1, x2 y2 x3 y3
    float* a = aos + j * C;  // joints j..j+3 interleaved (padding lanes land past J * C)
    if (C == 3) {
      const __m128 Z = _mm256_cvtpd_ps(_mm256_and_pd(z, m));
      const __m128 t1 = _mm_shuffle_ps(Z, X, _MM_SHUFFLE(1, 1, 0, 0));   // z0 z0 x1 x1
      const __m128 t2 = _mm_shuffle_ps(Y, Z, _MM_SHUFFLE(1, 1, 1, 1));   // y1 y1 z1 z1
      const __m128 t3 = _mm_shuffle_ps(Z, hi, _MM_SHUFFLE(3, 2, 3, 2));  // z2 z3 x3 y3
      _mm_storeu_ps(a, _mm_shuffle_ps(lo, t1, _MM_SHUFFLE(2, 0, 1, 0)));      // x0 y0 z0 x1
      _mm_storeu_ps(a + 4, _mm_shuffle_ps(t2, hi, _MM_SHUFFLE(1, 0, 2, 0)));  // y1 z1 x2 y2
      _mm_storeu_ps(a + 8, _mm_shuffle_ps(t3, t3, _MM_SHUFFLE(1, 3, 2, 0)));  // z2 x3 y3 z3
    } else {
      _mm_storeu_ps(a, lo);
      _mm_storeu_ps(a + 4, hi);
    }
    const int32_t* s = dt.src.data() + j;
    const __m128 cfv = _mm_set_ps(conf[s[3]], conf[s[2]], conf[s[1]], conf[s[0]]);
    // 64-bit lane masks -> 32-bit: take the low halves.
    const __m128 m32 = _mm_castsi128_ps(_mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(good, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6))));
    const __m128 c = _mm_and_ps(cfv, m32);
    if (j + 4 <= J) {
      _mm_storeu_ps(out_conf + j, c);
    } else {
      float tail[4];
      _mm_storeu_ps(tail, c);
      for (int l = 0; j + l < J; ++l) out_conf[j + l] = tail[l];
    }
  }
  store_row(aos, out, J * C);
  zero_unstorable<C>(J, out, out_conf);
}
#endif

}  // namespace cpu
}  // namespace pose
}  // namespace slpfast
