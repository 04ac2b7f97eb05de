/* Times fastlstm's C ABI from C, for benchmarks/compare.py and test_bench.py.
 *
 *   capi_driver D H O B T      then, on stdin, lines "OP N": run N calls of OP, answer "ok"
 *
 * OP: count (fastlstm_param_count: the cost of one call across the ABI), step (fastlstm_step
 * on one stream), train (fastlstm_train_step on a (T, B, D) batch, MSE on O outputs).
 * The caller times each request: N calls from C plus one pipe round trip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastlstm.h"

static void fail(const char *what) {
    printf("error %s: %s\n", what, fastlstm_last_error());
    fflush(stdout);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s D H O B T\n", argv[0]);
        return 2;
    }
    int64_t D = atoll(argv[1]), H = atoll(argv[2]), O = atoll(argv[3]), B = atoll(argv[4]), T = atoll(argv[5]);
    fastlstm_config cfg;
    fastlstm_config_init(&cfg);
    cfg.input_size = D; cfg.hidden_size = H; cfg.output_size = O; cfg.seed = 0;
    fastlstm_model *m = NULL;
    if (fastlstm_create(&cfg, &m)) fail("create");
    float *x = malloc(sizeof(float) * T * B * D), *y = malloc(sizeof(float) * B * O), out[1024];
    if (!x || !y || O > 1024) return 2;
    srand(0);
    for (int64_t k = 0; k < T * B * D; k++) x[k] = (float)rand() / RAND_MAX - 0.5f;
    for (int64_t k = 0; k < B * O; k++) y[k] = (float)rand() / RAND_MAX - 0.5f;
    char op[16];
    long n;
    while (scanf("%15s %ld", op, &n) == 2) {
        int64_t count;
        double loss;
        for (long i = 0; i < n; i++) {
            if (!strcmp(op, "count")) {
                if (fastlstm_param_count(m, &count)) fail("param_count");
            } else if (!strcmp(op, "step")) {
                if (fastlstm_step(m, x, 1, out, 1024)) fail("step");
            } else if (!strcmp(op, "train")) {
                if (fastlstm_train_step(m, x, NULL, y, NULL, T, B, &loss)) fail("train_step");
            } else {
                printf("error unknown op %s\n", op);
                fflush(stdout);
                return 2;
            }
        }
        printf("ok\n");
        fflush(stdout);
    }
    fastlstm_free(m);
    return 0;
}
