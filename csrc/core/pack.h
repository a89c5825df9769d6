// Torch-free core: moving variable-length sequences between padded and packed form.
//
// Padded:  (B, T, F) row-major, sequence b occupies rows [0, len_b) of its T rows.
// Packed:  (total, F) row-major, sequence b occupies rows [cu[b], cu[b+1]).
// Elements are moved as opaque words of `elem_size` bytes (1, 2, 4 or 8), so one
// implementation serves every dtype. Padding rows of the padded output are zero-filled.
#pragma once

#include <cstddef>
#include <cstdint>

namespace slpfast {

// Returns a non-null message when (B, T, cu_seqlens) are inconsistent, else nullptr.
// Checks: cu[0] == 0, non-decreasing, every length <= T (when T >= 0).
const char* check_cu_seqlens(const int64_t* cu_seqlens, int64_t batch, int64_t max_len);

// Writes cu_seqlens (B+1) from lengths (B). Returns nullptr or an error message
// (negative length, or a sum past INT64_MAX).
const char* lengths_to_cu_seqlens(const int64_t* lengths, int64_t batch, int64_t* cu_seqlens);

// padded (B, T, F) -> packed (cu[B], F).
void pack_padded_cpu(const void* padded, void* packed, const int64_t* cu_seqlens, int64_t batch,
                     int64_t max_len, int64_t features, int64_t elem_size);

// packed (cu[B], F) -> padded (B, T, F); rows >= len_b are zeroed.
void unpack_packed_cpu(const void* packed, void* padded, const int64_t* cu_seqlens, int64_t batch,
                       int64_t max_len, int64_t features, int64_t elem_size);

#ifdef SLPFAST_WITH_CUDA_DECLS
// CUDA versions: pointers are device pointers, `stream` is a cudaStream_t; `packed_rows` is the
// packed array's row count (known from its shape). cu_seqlens are not checked (device memory):
// every sequence is clamped to [0, packed_rows), so bad values never reach outside the arrays.
// Return a cudaError_t as int (0 on success).
int pack_padded_cuda(const void* padded, void* packed, const int64_t* cu_seqlens, int64_t batch,
                     int64_t max_len, int64_t features, int64_t elem_size, int64_t packed_rows, void* stream);
int unpack_packed_cuda(const void* packed, void* padded, const int64_t* cu_seqlens, int64_t batch,
                       int64_t max_len, int64_t features, int64_t elem_size, int64_t packed_rows, void* stream);
#endif

}  // namespace slpfast
