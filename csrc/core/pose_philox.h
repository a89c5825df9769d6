// Counter-based random numbers for the pose ops: Philox4x32-10 (Salmon et al., SC'11,
// "Parallel random numbers: as easy as 1, 2, 3"), written once for host and device.
//
// Every random draw of the pose ops is a pure function of (seed, clip id, stream, index):
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (clip id low 32, clip id high 32, stream, index)
// so a clip's augmentation does not depend on how clips are batched, on the device, or on
// the order in which threads run. The same formulas are implemented in numpy in
// slpfast/reference/pose.py; tests check both against the Random123 known-answer vectors.
//
// Uniforms are (x + 0.5) * 2^-32, strictly inside (0, 1). The per-clip parameters take their
// normals from Box-Muller in double precision (CPU and CUDA agree to the last bit of the float
// outputs); the per-joint jitter from Box-Muller in float on exact 23-bit uniforms (see
// box_muller_f: CPU and CUDA may differ in the last bit of their float libm results).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SLP_HD __host__ __device__ __forceinline__
#else
#define SLP_HD inline
#endif

namespace slpfast {
namespace pose {

// Streams separate the independent uses of one (seed, clip) key.
enum RngStream : uint32_t {
  kStreamParams = 0,     // per-clip augmentation parameters
  kStreamJitter = 1,     // per (output frame, joint) Gaussian jitter, index = i * J + j
  kStreamJointDrop = 2,  // per (output frame, joint) dropout, index = i * J + j
  kStreamFrameDrop = 3,  // per output frame dropout, index = i
};

struct U32x4 {
  uint32_t v[4];
};

SLP_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds; matches Random123's philox4x32_R(10, ctr, key).
SLP_HD U32x4 philox4x32_10(U32x4 ctr, uint32_t k0, uint32_t k1) {
  const uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  const uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kM0, ctr.v[0], &hi0, &lo0);
    mulhilo32(kM1, ctr.v[2], &hi1, &lo1);
    U32x4 next;
    next.v[0] = hi1 ^ ctr.v[1] ^ k0;
    next.v[1] = lo1;
    next.v[2] = hi0 ^ ctr.v[3] ^ k1;
    next.v[3] = lo0;
    ctr = next;
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// The four words for (seed, clip, stream, index).
SLP_HD U32x4 draw(uint64_t seed, uint64_t clip, uint32_t stream, uint32_t index) {
  U32x4 ctr;
  ctr.v[0] = static_cast<uint32_t>(clip);
  ctr.v[1] = static_cast<uint32_t>(clip >> 32);
  ctr.v[2] = stream;
  ctr.v[3] = index;
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1), never 0 or 1 (so log() is safe).
SLP_HD double u01(uint32_t x) { return (static_cast<double>(x) + 0.5) * 2.3283064365386963e-10; }

// Box-Muller: two standard normals from two uniforms.
SLP_HD void box_muller(uint32_t a, uint32_t b, double* z0, double* z1) {
  const double kTwoPi = 6.283185307179586;
  const double r = sqrt(-2.0 * log(u01(a)));
  const double theta = kTwoPi * u01(b);
  *z0 = r * cos(theta);
  *z1 = r * sin(theta);
}

// Uniform in (0, 1) from the top 23 bits of x: (k + 1/2) 2^-23, exact in float (never 0 or 1).
SLP_HD float u01f(uint32_t x) { return (static_cast<float>(x >> 9) + 0.5f) * 1.1920928955078125e-07f; }

// Box-Muller in float, for the per-joint jitter: it runs for every output joint, and double
// log/sin/cos cost a GPU several times their float versions (the FP64 instructions of the
// fused augment kernel fell from 270 to 112). The uniforms are exact on both devices and
// theta is one IEEE product, so CPU and CUDA differ only by their libm's last bits: a few
// 1e-7 of |z| <= 5.8, scaled by jitter_std in the output (1e-6 * jitter_std at most). Against
// double precision, the rounding of theta adds up to ~1.4e-6 absolute in z.
SLP_HD void box_muller_f(uint32_t a, uint32_t b, float* z0, float* z1) {
  const float r = sqrtf(-2.0f * logf(u01f(a)));
  const float theta = 6.28318530717958648f * u01f(b);
  *z0 = r * cosf(theta);
  *z1 = r * sinf(theta);
}

}  // namespace pose
}  // namespace slpfast
