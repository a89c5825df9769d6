// Unit tests of the torch-free pack/unpack core (csrc/core/pack.h).
#include <cstdint>
#include <climits>
#include <cstring>
#include <vector>

#include "check.h"
#include "pack.h"

using slpfast::check_cu_seqlens;
using slpfast::lengths_to_cu_seqlens;

static void test_cu_seqlens() {
  const int64_t lengths[3] = {2, 0, 3};
  int64_t cu[4];
  CHECK(lengths_to_cu_seqlens(lengths, 3, cu) == nullptr);
  CHECK(cu[0] == 0 && cu[1] == 2 && cu[2] == 2 && cu[3] == 5);
  CHECK(check_cu_seqlens(cu, 3, 3) == nullptr);
  CHECK(check_cu_seqlens(cu, 3, 2) != nullptr);  // a length 3 > max_len 2
  const int64_t bad_start[3] = {1, 2, 3};
  CHECK(check_cu_seqlens(bad_start, 2, -1) != nullptr);
  const int64_t decreasing[3] = {0, 3, 2};
  CHECK(check_cu_seqlens(decreasing, 2, -1) != nullptr);
  const int64_t negative[2] = {1, -1};
  CHECK(lengths_to_cu_seqlens(negative, 2, cu) != nullptr);
  // cu[b+1] - cu[b] must not be computed before the order is known: here 2^63-1 -> -2
  // wrapped to a positive "length" (signed overflow), the array passed as non-decreasing, and
  // the packed pose ops read clip 0 as 2^63-1 rows long (a segfault).
  const int64_t wraps[4] = {0, INT64_MAX, -2, 8};
  CHECK(check_cu_seqlens(wraps, 3, -1) != nullptr);
  const int64_t wraps_small[4] = {0, INT64_MAX, INT64_MIN, 1};
  CHECK(check_cu_seqlens(wraps_small, 3, -1) != nullptr);
  // Lengths whose sum passes INT64_MAX.
  const int64_t huge[2] = {INT64_MAX, 2};
  CHECK(lengths_to_cu_seqlens(huge, 2, cu) != nullptr);
}

template <typename T>
static void test_round_trip() {
  const int64_t B = 3, T_ = 4, F = 5;
  const int64_t lengths[B] = {4, 0, 2};
  int64_t cu[B + 1];
  lengths_to_cu_seqlens(lengths, B, cu);
  std::vector<T> padded(B * T_ * F);
  for (size_t i = 0; i < padded.size(); ++i) padded[i] = static_cast<T>(i + 1);
  std::vector<T> packed(cu[B] * F, T(0));
  slpfast::pack_padded_cpu(padded.data(), packed.data(), cu, B, T_, F, sizeof(T));
  // Row r of sequence b lands at packed row cu[b] + r.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < lengths[b]; ++r)
      for (int64_t f = 0; f < F; ++f)
        CHECK(packed[(cu[b] + r) * F + f] == padded[(b * T_ + r) * F + f]);
  std::vector<T> back(B * T_ * F, T(7));
  slpfast::unpack_packed_cpu(packed.data(), back.data(), cu, B, T_, F, sizeof(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < T_; ++r)
      for (int64_t f = 0; f < F; ++f) {
        const T want = r < lengths[b] ? padded[(b * T_ + r) * F + f] : T(0);
        CHECK(back[(b * T_ + r) * F + f] == want);
      }
}

int main() {
  test_cu_seqlens();
  test_round_trip<float>();
  test_round_trip<double>();
  test_round_trip<uint16_t>();
  test_round_trip<uint8_t>();
  TEST_MAIN_END();
}
