/* Data-parallel training from C with MPI: each rank computes gradients on its shard of a
 * batch, MPI_Allreduce sums them, every rank applies the same update.
 *   mpicc mpi_train.c -o mpi_train $(python -m fastlstm.capi --cflags --libs --dir DIR)
 *   mpiexec -n 2 ./mpi_train [steps=300]
 * Every rank draws the same global adding-problem batch (same seed) and takes its rows. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include "fastlstm.h"
#include "adding_data.h"

#define CHECK(call) do { int rc_ = (call); if (rc_ != FASTLSTM_OK) { \
    fprintf(stderr, "%s failed: %s (%s)\n", #call, fastlstm_status_string(rc_), fastlstm_last_error()); \
    MPI_Abort(MPI_COMM_WORLD, 1); } } while (0)

static unsigned long long fnv1a(const void *p, size_t n) {      /* a checksum of the bytes */
    unsigned long long h = 1469598103934665603ULL;
    for (size_t k = 0; k < n; k++) h = (h ^ ((const unsigned char *)p)[k]) * 1099511628211ULL;
    return h;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int64_t T = 30, B = 64, steps = argc > 1 ? atoll(argv[1]) : 300;
    int64_t b0 = rank * B / size, b1 = (rank + 1) * B / size, Bs = b1 - b0;
    fastlstm_config cfg;
    fastlstm_config_init(&cfg);
    cfg.input_size = 2; cfg.hidden_size = 32; cfg.output_size = 1;
    cfg.learning_rate = 1e-2; cfg.clip = 1.0; cfg.seed = 0;          /* same seed: same start */
    fastlstm_model *m = NULL;
    CHECK(fastlstm_create(&cfg, &m));
    CHECK(fastlstm_set_first_row(m, b0));     /* with cfg.dropout, each row draws its mask in the whole batch */
    int64_t n;
    CHECK(fastlstm_param_count(m, &n));
    float *g = malloc(sizeof(float) * n), *x = malloc(sizeof(float) * T * B * 2), *y = malloc(sizeof(float) * B);
    float *xs = malloc(sizeof(float) * T * Bs * 2);
    double loss, total = 0;
    for (int64_t s = 1; s <= steps; s++) {
        adding_batch(x, y, T, B);                                  /* the global batch */
        for (int64_t t = 0; t < T; t++)                            /* this rank's rows */
            for (int64_t b = 0; b < Bs; b++)
                for (int k = 0; k < 2; k++) xs[(t * Bs + b) * 2 + k] = x[(t * B + b0 + b) * 2 + k];
        CHECK(fastlstm_compute_gradients(m, xs, NULL, y + b0, NULL, T, Bs, &loss));
        CHECK(fastlstm_get_grads(m, g, n));
        for (int64_t k = 0; k < n; k++) g[k] *= (float)Bs / B;     /* mean over the global batch */
        MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        CHECK(fastlstm_set_grads(m, g, n));
        CHECK(fastlstm_apply_update(m));
        double global = loss * Bs / B;
        MPI_Allreduce(MPI_IN_PLACE, &global, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        total += global;
        if (rank == 0 && s % 100 == 0) { printf("step %lld  mean loss %.4f\n", (long long)s, total / 100); fflush(stdout); total = 0; }
    }
    CHECK(fastlstm_get_params(m, g, n));
    printf("rank %d params checksum %016llx\n", rank, fnv1a(g, (size_t)n * sizeof(float)));
    fastlstm_free(m);
    MPI_Finalize();
    return 0;
}
