// GuardedArray<T>: n T's against an inaccessible page, at the end of its mapping (a read or write
// past the array faults) or at its start (one before it faults): an access outside the array
// crashes the test in any build, not only under AddressSanitizer. Shared by the emulated-kernel
// tests (tests/cpp/test_*_cuda_emulated.cpp).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>

template <typename T>
struct GuardedArray {
  char* map = nullptr;
  size_t map_bytes = 0;
  T* data = nullptr;
  GuardedArray(size_t n, bool at_end, T fill) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (n * sizeof(T) + page - 1) / page * page;
    map_bytes = body + 2 * page;
    map = static_cast<char*>(mmap(nullptr, map_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (map == MAP_FAILED || (body > 0 && mprotect(map + page, body, PROT_READ | PROT_WRITE) != 0)) std::abort();
    data = reinterpret_cast<T*>(at_end ? map + page + body - n * sizeof(T) : map + page);
    std::fill(data, data + n, fill);
  }
  ~GuardedArray() { munmap(map, map_bytes); }
  GuardedArray(const GuardedArray&) = delete;
  GuardedArray& operator=(const GuardedArray&) = delete;
};
