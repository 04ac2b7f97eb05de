/* The adding problem for the C examples: x[T][B][2] = (value, marker) with values uniform in
 * [0, 1) and one marker in each half of the sequence; y[B] = the sum of the marked values. */
#ifndef ADDING_DATA_H
#define ADDING_DATA_H
#include <stdint.h>

static unsigned long long adding_rng = 88172645463325252ULL;

static double adding_uniform(void) {                 /* xorshift64*, in [0, 1) */
    adding_rng ^= adding_rng >> 12; adding_rng ^= adding_rng << 25; adding_rng ^= adding_rng >> 27;
    return (double)((adding_rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void adding_batch(float *x, float *y, int64_t T, int64_t B) {
    for (int64_t b = 0; b < B; b++) {
        int64_t i = (int64_t)(adding_uniform() * (T / 2)), j = T / 2 + (int64_t)(adding_uniform() * (T - T / 2));
        y[b] = 0;
        for (int64_t t = 0; t < T; t++) {
            float v = (float)adding_uniform();
            x[(t * B + b) * 2] = v;
            x[(t * B + b) * 2 + 1] = (t == i || t == j);
            if (t == i || t == j) y[b] += v;
        }
    }
}
#endif
