/* Load a checkpoint trained in Python (`fastlstm train --task adding --T 50`) and stream
 * one adding-problem sequence through it, one time step per call, as an online system would.
 *   ./stream_predict CHECKPOINT [T=50] */
#include <stdio.h>
#include <stdlib.h>
#include "fastlstm.h"

#define CHECK(call) do { int rc_ = (call); if (rc_ != FASTLSTM_OK) { \
    fprintf(stderr, "%s failed: %s (%s)\n", #call, fastlstm_status_string(rc_), fastlstm_last_error()); \
    return 1; } } while (0)

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s CHECKPOINT [T]\n", argv[0]); return 2; }
    int64_t T = argc > 2 ? atoll(argv[2]) : 50;
    fastlstm_model *model = NULL;
    CHECK(fastlstm_load(argv[1], &model));
    CHECK(fastlstm_reset_state(model, 1));
    srand(7);
    float x[2], out[1], target = 0;
    for (int64_t t = 0; t < T; t++) {
        x[0] = (float)rand() / ((float)RAND_MAX + 1);
        x[1] = (t == T / 4 || t == 3 * T / 4);             /* the two marked steps */
        if (x[1] == 1) target += x[0];
        CHECK(fastlstm_step(model, x, 1, out, 1));
        if (x[1] == 1 || t == T - 1)
            printf("step %3lld  value %.3f  marker %d  prediction so far %.4f\n", (long long)t, x[0], (int)x[1], out[0]);
    }
    printf("target %.4f  prediction %.4f  error %.4f\n", target, out[0], out[0] - target);
    fastlstm_free(model);
    return 0;
}
