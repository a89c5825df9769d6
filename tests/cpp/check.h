// Minimal assertion helpers for the C++ unit tests (no external test framework needed).
#pragma once

#include <cmath>
#include <cstdio>

static int g_failures = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                              \
    }                                                                            \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                    \
  do {                                                                           \
    const double _a = (a), _b = (b);                                             \
    if (!(std::fabs(_a - _b) <= (tol))) {                                        \
      std::fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s=%g vs %s=%g (tol %g)\n", \
                   __FILE__, __LINE__, #a, _a, #b, _b, (double)(tol));           \
      ++g_failures;                                                              \
    }                                                                            \
  } while (0)

#define TEST_MAIN_END()                                                          \
  do {                                                                           \
    if (g_failures) std::fprintf(stderr, "%d check(s) failed\n", g_failures);    \
    else std::printf("all checks passed\n");                                     \
    return g_failures ? 1 : 0;                                                   \
  } while (0)
