// CPU implementation of csrc/core/pack.h. Plain C++: no torch, no threads of its own
// (callers parallelise over the batch).
#include "pack.h"

#include <cstdint>
#include <cstring>

namespace slpfast {

const char* check_cu_seqlens(const int64_t* cu, int64_t batch, int64_t max_len) {
  if (batch < 0) return "batch must be >= 0";
  if (cu[0] != 0) return "cu_seqlens[0] must be 0";
  for (int64_t b = 0; b < batch; ++b) {
    // Compare before subtracting: the difference of two arbitrary int64 can overflow (and wrap
    // to a plausible length); once every entry is >= cu[0] = 0 and in order, it cannot.
    if (cu[b + 1] < cu[b]) return "cu_seqlens must be non-decreasing";
    if (max_len >= 0 && cu[b + 1] - cu[b] > max_len) return "a sequence is longer than max_len";
  }
  return nullptr;
}

const char* lengths_to_cu_seqlens(const int64_t* lengths, int64_t batch, int64_t* cu) {
  cu[0] = 0;
  for (int64_t b = 0; b < batch; ++b) {
    if (lengths[b] < 0) return "lengths must be >= 0";
    if (lengths[b] > INT64_MAX - cu[b]) return "the sum of lengths overflows int64";
    cu[b + 1] = cu[b] + lengths[b];
  }
  return nullptr;
}

void pack_padded_cpu(const void* padded, void* packed, const int64_t* cu, int64_t batch,
                     int64_t max_len, int64_t features, int64_t elem_size) {
  const auto* src = static_cast<const char*>(padded);
  auto* dst = static_cast<char*>(packed);
  const int64_t row = features * elem_size;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = cu[b + 1] - cu[b];
    if (len > 0) std::memcpy(dst + cu[b] * row, src + b * max_len * row, static_cast<size_t>(len * row));
  }
}

void unpack_packed_cpu(const void* packed, void* padded, const int64_t* cu, int64_t batch,
                       int64_t max_len, int64_t features, int64_t elem_size) {
  const auto* src = static_cast<const char*>(packed);
  auto* dst = static_cast<char*>(padded);
  const int64_t row = features * elem_size;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = cu[b + 1] - cu[b];
    char* out = dst + b * max_len * row;
    if (len > 0) std::memcpy(out, src + cu[b] * row, static_cast<size_t>(len * row));
    std::memset(out + len * row, 0, static_cast<size_t>((max_len - len) * row));
  }
}

}  // namespace slpfast
