/* Train an LSTM on the adding problem from C and watch its loss fall.
 *   ./train_adding [T=50] [steps=600] [checkpoint=adding_c.ckpt]
 * Each sequence has T steps of (value, marker): values uniform in [0, 1), two markers (one
 * in each half); the target is the sum of the two marked values. Predicting 1 scores 0.167. */
#include <stdio.h>
#include <stdlib.h>
#include "fastlstm.h"
#include "adding_data.h"

#define CHECK(call) do { int rc_ = (call); if (rc_ != FASTLSTM_OK) { \
    fprintf(stderr, "%s failed: %s (%s)\n", #call, fastlstm_status_string(rc_), fastlstm_last_error()); \
    return 1; } } while (0)

int main(int argc, char **argv) {
    int64_t T = argc > 1 ? atoll(argv[1]) : 50, steps = argc > 2 ? atoll(argv[2]) : 600, B = 64;
    const char *path = argc > 3 ? argv[3] : "adding_c.ckpt";
    if (fastlstm_version_number() != FASTLSTM_VERSION_NUMBER) {
        fprintf(stderr, "header %d and library %d disagree\n", FASTLSTM_VERSION_NUMBER, fastlstm_version_number());
        return 1;
    }
    fastlstm_config cfg;
    fastlstm_config_init(&cfg);
    cfg.input_size = 2; cfg.hidden_size = 64; cfg.output_size = 1;
    cfg.learning_rate = 1e-2; cfg.clip = 1.0; cfg.seed = 0;
    fastlstm_model *model = NULL;
    CHECK(fastlstm_create(&cfg, &model));
    float *x = malloc(sizeof(float) * T * B * 2), *y = malloc(sizeof(float) * B);
    double loss = 0, avg = 0;
    for (int64_t s = 1; s <= steps; s++) {
        adding_batch(x, y, T, B);
        CHECK(fastlstm_train_step(model, x, NULL, y, NULL, T, B, &loss));
        avg += loss;
        if (s % 100 == 0) { printf("step %lld  mean loss %.4f\n", (long long)s, avg / 100); fflush(stdout); avg = 0; }
    }
    CHECK(fastlstm_save(model, path));
    printf("saved %s\n", path);
    fastlstm_free(model);
    free(x); free(y);
    return 0;
}
