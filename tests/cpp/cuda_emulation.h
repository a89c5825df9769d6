// Just enough of CUDA's execution model to run csrc/core/pose_cuda_kernels.cuh as host code:
// the kernels' own bodies, compiled by the host compiler, launched block by block.
//
// - threadIdx / blockIdx are set by the launcher before each emulated thread runs, blockDim /
//   gridDim per launch;
// - a launch without barriers runs its threads one after another (launch_serial): kernels whose
//   threads read what other threads of the same launch write need launch_with_barriers;
// - a launch whose kernel calls __syncthreads runs the threads of a block as fibers that meet
//   at every barrier, blocks one after another (launch_with_barriers);
// - __shared__ arrays become function-local statics: one block runs at a time, so its threads
//   share them as on a GPU (but they start zeroed and keep the last block's values);
// - a barrier that some threads of a block never reach aborts (on a GPU: a hang or UB).
// What the GPU does differently (warp scheduling, FMA contraction, device math libraries) is
// not emulated: this checks indexing, bounds, reductions and control flow, not the last ulp.
#pragma once

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

struct EmulatedDim3 {
  unsigned x = 0, y = 0, z = 0;
};

inline thread_local EmulatedDim3 threadIdx, blockIdx;
inline EmulatedDim3 blockDim, gridDim;

// The threads of a block that calls __syncthreads run as fibers (ucontext) on this one host
// thread: each runs until its next __syncthreads, then the next one runs; when all have
// arrived, the next round begins. Deterministic, and ~100x cheaper than an OS thread per CUDA
// thread blocking on a condition variable (128 threads through ~16 barriers per block).
struct FiberBlock {
  ucontext_t scheduler;
  std::vector<ucontext_t> fibers;
  std::vector<bool> finished;
  std::function<void()> kernel;
  unsigned current = 0;
};
inline FiberBlock* g_fiber_block = nullptr;

// The fibers' stacks, allocated once and reused by every launch.
inline char* fiber_stack(unsigned t, size_t bytes) {
  static std::vector<std::vector<char>> stacks;
  if (stacks.size() <= t) stacks.resize(t + 1);
  if (stacks[t].size() < bytes) stacks[t].resize(bytes);
  return stacks[t].data();
}

inline void __syncthreads() {
  FiberBlock& blk = *g_fiber_block;
  swapcontext(&blk.fibers[blk.current], &blk.scheduler);  // back when the scheduler resumes us
}

inline void fiber_entry() {
  g_fiber_block->kernel();
  g_fiber_block->finished[g_fiber_block->current] = true;  // then uc_link returns to the scheduler
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

// Runs kernel() for every (block, thread) of a grid, in order: for kernels without barriers.
template <typename Kernel>
void launch_serial(unsigned grid, unsigned threads, Kernel kernel) {
  gridDim.x = grid;
  blockDim.x = threads;
  for (unsigned b = 0; b < grid; ++b)
    for (unsigned t = 0; t < threads; ++t) {
      blockIdx.x = b;
      threadIdx.x = t;
      kernel();
    }
}

// Runs kernel() for every thread of every block, the threads of a block as fibers that meet at
// each __syncthreads, blocks one after another.
template <typename Kernel>
void launch_with_barriers(unsigned grid, unsigned threads, Kernel kernel) {
  constexpr size_t kStack = 256 * 1024;
  gridDim.x = grid;
  blockDim.x = threads;
  FiberBlock blk;
  blk.kernel = kernel;
  blk.fibers.resize(threads);
  FiberBlock* outer = g_fiber_block;
  g_fiber_block = &blk;
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx.x = b;
    blk.finished.assign(threads, false);
    for (unsigned t = 0; t < threads; ++t) {
      getcontext(&blk.fibers[t]);
      blk.fibers[t].uc_stack.ss_sp = fiber_stack(t, kStack);
      blk.fibers[t].uc_stack.ss_size = kStack;
      blk.fibers[t].uc_link = &blk.scheduler;
      makecontext(&blk.fibers[t], fiber_entry, 0);
    }
    // One round: every unfinished thread up to its next barrier (or its end), in ascending
    // order on even rounds and descending on odd ones, so that a result that depends on the
    // order the threads of a round run in shows up as a mismatch.
    for (unsigned round = 0, waiting = threads; waiting > 0; ++round) {
      unsigned ended = 0;
      waiting = 0;
      for (unsigned k = 0; k < threads; ++k) {
        const unsigned t = round % 2 ? threads - 1 - k : k;
        if (blk.finished[t]) continue;
        blk.current = t;
        threadIdx.x = t;
        swapcontext(&blk.scheduler, &blk.fibers[t]);
        (blk.finished[t] ? ended : waiting) += 1;
      }
      if (waiting > 0 && ended > 0) {  // on a GPU: a barrier some threads never reach (a hang or UB)
        std::fprintf(stderr, "cuda_emulation: block %u: %u thread(s) ended while %u wait at __syncthreads\n", b,
                     ended, waiting);
        std::abort();
      }
    }
  }
  g_fiber_block = outer;
}
