// KILN_CHECK: aborts on a broken invariant, with file, line and a reason.
// Never for bad input: that is an Error value.
#pragma once

#include <cstdio>
#include <cstdlib>

#define KILN_CHECK(cond, why)                                                                \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", __FILE__, __LINE__, #cond, why); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
