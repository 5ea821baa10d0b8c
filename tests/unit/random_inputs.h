/* random_inputs.h — reproducible random test inputs (an own xorshift, the same numbers on every
 * run and machine), shared by the backend tests. Header-only, static: each test binary has its
 * own generator. Must never: depend on libc's rand or the time.
 */
#ifndef BP_RANDOM_INPUTS_H
#define BP_RANDOM_INPUTS_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static inline float uniform(float lo, float hi) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)(rng_state >> 40) / 16777216.0f;
}

/* n floats uniform in [lo, hi); the caller frees them. Exits 2 when out of memory. */
static inline float *random_floats(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof(float));
    if (!x) { fprintf(stderr, "out of memory\n"); exit(2); }
    for (size_t i = 0; i < n; i++) x[i] = uniform(lo, hi);
    return x;
}

#endif
