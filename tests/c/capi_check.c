/* Test driver for the C ABI (run by tests/test_capi.py): one mode per behaviour. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fastlstm.h"

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }

static fastlstm_model *model(int64_t D, int64_t H, int64_t O, uint64_t seed) {
    fastlstm_config cfg;
    fastlstm_config_init(&cfg);
    cfg.input_size = D; cfg.hidden_size = H; cfg.output_size = O; cfg.seed = seed;
    fastlstm_model *m = NULL;
    if (fastlstm_create(&cfg, &m) != FASTLSTM_OK) { fprintf(stderr, "create: %s\n", fastlstm_last_error()); exit(1); }
    return m;
}

static fastlstm_model *small_model(uint64_t seed) { return model(3, 8, 2, seed); }

static double checksum(fastlstm_model *m) {
    int64_t n = 0;
    fastlstm_param_count(m, &n);
    float *p = malloc(sizeof(float) * n);
    fastlstm_get_params(m, p, n);
    double s = 0;
    for (int64_t k = 0; k < n; k++) s += p[k] * (double)(k % 7 + 1);
    free(p);
    return s;
}

/* Steps until one fails: a ReLU RNN whose parameters are all 1e20 overflows h by its second
 * step. Returns that step's status. */
static int overflowing(fastlstm_model *mod, const float *x, const int64_t *ids) {
    int64_t n = 0;
    fastlstm_param_count(mod, &n);
    float *p = malloc((size_t)n * sizeof *p), o[16];
    for (int64_t k = 0; k < n; k++) p[k] = 1e20f;
    fastlstm_set_params(mod, p, n);
    free(p);
    int rc = FASTLSTM_OK;
    for (int k = 0; k < 5 && rc == FASTLSTM_OK; k++)
        rc = ids ? fastlstm_step_ids(mod, ids, 2, o, 16) : fastlstm_step(mod, x, 2, o, 16);
    return rc;
}

/* One line per case: "function case status message" (message only on failure). */
#define REPORT(fn, name, call) do { int rc_ = (call); \
    printf("%s %s %d %s\n", #fn, name, rc_, rc_ ? fastlstm_last_error() : ""); } while (0)

static fastlstm_model *configured(fastlstm_config *cfg) {
    fastlstm_model *m = NULL;
    if (fastlstm_create(cfg, &m) != FASTLSTM_OK) { fprintf(stderr, "create: %s\n", fastlstm_last_error()); exit(1); }
    return m;
}

/* Every status each function's comment in fastlstm.h lists (tests/test_capi.py checks
 * that the cases cover them), and that a failed call changes nothing. */
static int errors(const char *dir) {
    fastlstm_model *m = small_model(1), *out = NULL;
    float x[4 * 2 * 3], y[2 * 2], o[16];
    for (int k = 0; k < 24; k++) x[k] = 0.1f * k;
    for (int k = 0; k < 4; k++) y[k] = 1;
    int64_t len_bad[2] = {5, 1}, n = 0;
    double loss, before = checksum(m);
    fastlstm_config cfg;
    fastlstm_config_init(&cfg);
    REPORT(fastlstm_create, "null_cfg", fastlstm_create(NULL, &out));
    REPORT(fastlstm_create, "null_out", fastlstm_create(&cfg, NULL));
    cfg.hidden_size = 0;
    REPORT(fastlstm_create, "zero_hidden", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.loss = 7;
    REPORT(fastlstm_create, "bad_loss", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.loss = FASTLSTM_LOSS_XENT; cfg.output_size = 1;     /* one class learns nothing */
    REPORT(fastlstm_create, "xent_one_class", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.learning_rate = -1;
    REPORT(fastlstm_create, "bad_lr", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.learning_rate = NAN;
    REPORT(fastlstm_create, "nan_lr", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.eps = NAN;
    REPORT(fastlstm_create, "nan_eps", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.learning_rate = 1e300;        /* inf once stored in float32 */
    REPORT(fastlstm_create, "huge_lr", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.eps = 1e-50;                  /* 0 once stored in float32 */
    REPORT(fastlstm_create, "tiny_eps", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.optimizer = FASTLSTM_OPTIMIZER_SGD; cfg.momentum = NAN;
    REPORT(fastlstm_create, "nan_momentum", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.weight_decay = -1;
    REPORT(fastlstm_create, "negative_weight_decay", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.optimizer = FASTLSTM_OPTIMIZER_ADAMW; cfg.weight_decay = NAN;
    REPORT(fastlstm_create, "nan_weight_decay", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.optimizer = FASTLSTM_OPTIMIZER_ADAMW; cfg.weight_decay = 1000;   /* lr·λ = 1 */
    REPORT(fastlstm_create, "adamw_decay_too_big", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.forget_bias = NAN;
    REPORT(fastlstm_create, "nan_forget_bias", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.forget_bias = 1e300;          /* inf once stored in float32 */
    REPORT(fastlstm_create, "huge_forget_bias", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.clip = NAN;
    REPORT(fastlstm_create, "nan_clip", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.clip = -1;
    REPORT(fastlstm_create, "negative_clip", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.num_layers = (int64_t)1 << 40;
    REPORT(fastlstm_create, "huge_layers", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.hidden_size = (int64_t)1 << 30; cfg.input_size = (int64_t)1 << 30;
    REPORT(fastlstm_create, "beyond_memory", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.bidirectional = 2;
    REPORT(fastlstm_create, "bad_bidirectional", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.dropout = 1;
    REPORT(fastlstm_create, "dropout_1", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.dropout = NAN;
    REPORT(fastlstm_create, "nan_dropout", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.bidirectional = 1; cfg.dropout = 0.25; cfg.num_layers = 2;
    cfg.input_size = 3; cfg.hidden_size = 5; cfg.output_size = 2;
    REPORT(fastlstm_create, "ok_bidirectional", fastlstm_create(&cfg, &out));
    REPORT(fastlstm_train_step, "ok_bidirectional", fastlstm_train_step(out, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_predict, "ok_bidirectional", fastlstm_predict(out, x, NULL, 4, 2, o, 16));
    REPORT(fastlstm_step, "bidirectional", fastlstm_step(out, x, 2, o, 16));
    fastlstm_free(out);
    fastlstm_config_init(&cfg); cfg.proj_size = 8;                       /* not < hidden_size */
    REPORT(fastlstm_create, "proj_not_below_hidden", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.proj_size = -1;
    REPORT(fastlstm_create, "negative_proj", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.cell = FASTLSTM_CELL_GRU; cfg.hidden_size = 5; cfg.proj_size = 2;
    REPORT(fastlstm_create, "proj_with_gru", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.cell = FASTLSTM_CELL_GRU;
    cfg.input_size = 3; cfg.hidden_size = 5; cfg.output_size = 2;
    REPORT(fastlstm_create, "ok_gru", fastlstm_create(&cfg, &out));
    REPORT(fastlstm_train_step, "ok_gru", fastlstm_train_step(out, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_step, "ok_gru", fastlstm_step(out, x, 2, o, 16));
    fastlstm_free(out);
    fastlstm_config_init(&cfg); cfg.cell = FASTLSTM_CELL_RNN_RELU;
    cfg.input_size = 3; cfg.hidden_size = 5; cfg.output_size = 2;
    REPORT(fastlstm_create, "ok_rnn_relu", fastlstm_create(&cfg, &out));
    REPORT(fastlstm_train_step, "ok_rnn_relu", fastlstm_train_step(out, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_step, "ok_rnn_relu", fastlstm_step(out, x, 2, o, 16));
    char relu_path[1024];
    snprintf(relu_path, sizeof relu_path, "%s/relu.ckpt", dir);       /* the Python test reads its cell */
    REPORT(fastlstm_save, "ok_rnn_relu", fastlstm_save(out, relu_path));
    REPORT(fastlstm_step, "overflowing_state", overflowing(out, x, NULL));
    fastlstm_free(out);
    fastlstm_config_init(&cfg); cfg.cell = 4;
    REPORT(fastlstm_create, "unknown_cell", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.proj_size = 3; cfg.num_layers = 2;
    cfg.input_size = 3; cfg.hidden_size = 5; cfg.output_size = 2;
    REPORT(fastlstm_create, "ok_proj", fastlstm_create(&cfg, &out));
    REPORT(fastlstm_train_step, "ok_proj", fastlstm_train_step(out, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_step, "ok_proj", fastlstm_step(out, x, 2, o, 16));
    fastlstm_free(out);
    fastlstm_config_init(&cfg); cfg.vocab_size = -1;
    REPORT(fastlstm_create, "negative_vocab", fastlstm_create(&cfg, &out));
    fastlstm_config_init(&cfg); cfg.vocab_size = 7;                   /* token ids 0..6, E (7 x 3) */
    cfg.input_size = 3; cfg.hidden_size = 5; cfg.output_size = 2;
    REPORT(fastlstm_create, "ok_ids", fastlstm_create(&cfg, &out));
    int64_t ids[4 * 2] = {0, 1, 2, 3, 4, 5, 6, 0};
    double ids_before = checksum(out);
    REPORT(fastlstm_train_step, "ids_model", fastlstm_train_step(out, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_predict, "ids_model", fastlstm_predict(out, x, NULL, 4, 2, o, 16));
    REPORT(fastlstm_step, "ids_model", fastlstm_step(out, x, 2, o, 16));
    REPORT(fastlstm_train_step_ids, "float_model", fastlstm_train_step_ids(m, ids, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_train_step_ids, "null_ids", fastlstm_train_step_ids(out, NULL, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_train_step_ids, "null_handle", fastlstm_train_step_ids(NULL, ids, NULL, y, NULL, 4, 2, &loss));
    ids[5] = 7;
    REPORT(fastlstm_train_step_ids, "id_out_of_range", fastlstm_train_step_ids(out, ids, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_predict_ids, "id_out_of_range", fastlstm_predict_ids(out, ids, NULL, 4, 2, o, 16));
    REPORT(fastlstm_step_ids, "id_out_of_range", fastlstm_step_ids(out, ids + 4, 2, o, 16));
    ids[5] = -1;
    REPORT(fastlstm_compute_gradients_ids, "negative_id", fastlstm_compute_gradients_ids(out, ids, NULL, y, NULL, 4, 2, &loss));
    ids[5] = 5;
    y[1] = INFINITY;
    REPORT(fastlstm_train_step_ids, "inf_target", fastlstm_train_step_ids(out, ids, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_compute_gradients_ids, "inf_target", fastlstm_compute_gradients_ids(out, ids, NULL, y, NULL, 4, 2, &loss));
    y[1] = 1;
    REPORT(fastlstm_compute_gradients_ids, "null_ids", fastlstm_compute_gradients_ids(out, NULL, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_compute_gradients_ids, "null_handle", fastlstm_compute_gradients_ids(NULL, ids, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_predict_ids, "null_out", fastlstm_predict_ids(out, ids, NULL, 4, 2, NULL, 16));
    REPORT(fastlstm_predict_ids, "small_buffer", fastlstm_predict_ids(out, ids, NULL, 4, 2, o, 3));
    REPORT(fastlstm_predict_ids, "null_handle", fastlstm_predict_ids(NULL, ids, NULL, 4, 2, o, 16));
    REPORT(fastlstm_step_ids, "null_ids", fastlstm_step_ids(out, NULL, 2, o, 16));
    REPORT(fastlstm_step_ids, "small_buffer", fastlstm_step_ids(out, ids, 2, o, 3));
    REPORT(fastlstm_step_ids, "null_handle", fastlstm_step_ids(NULL, ids, 2, o, 16));
    REPORT(fastlstm_train_step_ids, "beyond_memory",         /* 32 TiB of ids, scanned for their range */
           fastlstm_train_step_ids(out, ids, NULL, y, NULL, (int64_t)1 << 41, 2, &loss));
    REPORT(fastlstm_predict_ids, "beyond_memory", fastlstm_predict_ids(out, ids, NULL, (int64_t)1 << 41, 2, o, 16));
    REPORT(fastlstm_step_ids, "beyond_memory", fastlstm_step_ids(out, ids, (int64_t)1 << 42, o, 16));
    printf("ids_unchanged %d\n", checksum(out) == ids_before);
    REPORT(fastlstm_train_step_ids, "ok", fastlstm_train_step_ids(out, ids, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_compute_gradients_ids, "ok", fastlstm_compute_gradients_ids(out, ids, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_predict_ids, "ok", fastlstm_predict_ids(out, ids, NULL, 4, 2, o, 16));
    REPORT(fastlstm_step_ids, "ok", fastlstm_step_ids(out, ids, 2, o, 16));
    fastlstm_free(out);
    fastlstm_config_init(&cfg); cfg.vocab_size = 7; cfg.cell = FASTLSTM_CELL_RNN_RELU;
    cfg.input_size = 3; cfg.hidden_size = 5; cfg.output_size = 2;
    out = configured(&cfg);
    REPORT(fastlstm_step_ids, "overflowing_state", overflowing(out, NULL, ids));
    fastlstm_free(out);
    fastlstm_config_init(&cfg);
    REPORT(fastlstm_create, "ok", fastlstm_create(&cfg, &out));
    fastlstm_free(out);
    fastlstm_model *a = NULL, *b = NULL;
    fastlstm_create(&cfg, &a); fastlstm_create(&cfg, &b);
    printf("handles %llu %llu\n", (unsigned long long)(uintptr_t)a, (unsigned long long)(uintptr_t)b);
    fastlstm_free(a); fastlstm_free(b);

    REPORT(fastlstm_train_step, "null_x", fastlstm_train_step(m, NULL, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_train_step, "null_targets", fastlstm_train_step(m, x, NULL, NULL, NULL, 4, 2, &loss));
    REPORT(fastlstm_train_step, "zero_T", fastlstm_train_step(m, x, NULL, y, NULL, 0, 2, &loss));
    REPORT(fastlstm_train_step, "negative_B", fastlstm_train_step(m, x, NULL, y, NULL, 4, -3, &loss));
    REPORT(fastlstm_train_step, "overflow", fastlstm_train_step(m, x, NULL, y, NULL, (int64_t)1 << 40, (int64_t)1 << 30, &loss));
    /* sizes whose x no machine here holds (24 TiB), below the overflow bound: they crashed, x being
     * scanned for NaN before any workspace was sized */
    REPORT(fastlstm_train_step, "beyond_memory", fastlstm_train_step(m, x, NULL, y, NULL, (int64_t)1 << 40, 2, &loss));
    REPORT(fastlstm_compute_gradients, "beyond_memory",
           fastlstm_compute_gradients(m, x, NULL, y, NULL, (int64_t)1 << 40, 2, &loss));
    REPORT(fastlstm_predict, "beyond_memory", fastlstm_predict(m, x, NULL, (int64_t)1 << 40, 2, o, 16));
    REPORT(fastlstm_step, "beyond_memory", fastlstm_step(m, x, (int64_t)1 << 40, o, 16));
    REPORT(fastlstm_train_step, "bad_lengths", fastlstm_train_step(m, x, len_bad, y, NULL, 4, 2, &loss));
    x[5] = NAN;
    REPORT(fastlstm_train_step, "nan_x", fastlstm_train_step(m, x, NULL, y, NULL, 4, 2, &loss));
    x[5] = 0.5f;
    y[1] = INFINITY;
    REPORT(fastlstm_train_step, "inf_target", fastlstm_train_step(m, x, NULL, y, NULL, 4, 2, &loss));
    y[1] = 1e30f;                       /* finite, but Adam's g² overflows float32: refused */
    REPORT(fastlstm_train_step, "overflowing_update", fastlstm_train_step(m, x, NULL, y, NULL, 4, 2, &loss));
    y[1] = 1;
    REPORT(fastlstm_train_step, "null_handle", fastlstm_train_step(NULL, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_train_step, "foreign_handle", fastlstm_train_step((fastlstm_model *)(uintptr_t)0xdeadbee0, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_compute_gradients, "null_x", fastlstm_compute_gradients(m, NULL, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_compute_gradients, "zero_B", fastlstm_compute_gradients(m, x, NULL, y, NULL, 4, 0, &loss));
    x[2] = -INFINITY;
    REPORT(fastlstm_compute_gradients, "inf_x", fastlstm_compute_gradients(m, x, NULL, y, NULL, 4, 2, &loss));
    x[2] = 0.2f;
    REPORT(fastlstm_compute_gradients, "null_handle", fastlstm_compute_gradients(NULL, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_apply_update, "null_handle", fastlstm_apply_update(NULL));
    REPORT(fastlstm_predict, "small_buffer", fastlstm_predict(m, x, NULL, 4, 2, o, 3));
    REPORT(fastlstm_predict, "null_out", fastlstm_predict(m, x, NULL, 4, 2, NULL, 16));
    REPORT(fastlstm_predict, "zero_T", fastlstm_predict(m, x, NULL, 0, 2, o, 16));
    x[3] = NAN;
    REPORT(fastlstm_predict, "nan_x", fastlstm_predict(m, x, NULL, 4, 2, o, 16));
    x[3] = 0.3f;
    REPORT(fastlstm_predict, "null_handle", fastlstm_predict(NULL, x, NULL, 4, 2, o, 16));
    REPORT(fastlstm_step, "zero_B", fastlstm_step(m, x, 0, o, 16));
    REPORT(fastlstm_step, "null_x", fastlstm_step(m, NULL, 2, o, 16));
    REPORT(fastlstm_step, "small_buffer", fastlstm_step(m, x, 2, o, 3));
    x[1] = NAN;
    REPORT(fastlstm_step, "nan_x", fastlstm_step(m, x, 2, o, 16));
    x[1] = 0.5f;
    REPORT(fastlstm_step, "null_handle", fastlstm_step(NULL, x, 2, o, 16));
    REPORT(fastlstm_reset_state, "zero_B", fastlstm_reset_state(m, 0));
    REPORT(fastlstm_reset_state, "null_handle", fastlstm_reset_state(NULL, 1));
    REPORT(fastlstm_param_count, "null_n", fastlstm_param_count(m, NULL));
    REPORT(fastlstm_param_count, "null_handle", fastlstm_param_count(NULL, &n));
    fastlstm_param_count(m, &n);
    float *p = malloc(sizeof(float) * n);
    REPORT(fastlstm_get_params, "wrong_n", fastlstm_get_params(m, o, 16));
    REPORT(fastlstm_get_params, "null_out", fastlstm_get_params(m, NULL, n));
    REPORT(fastlstm_get_params, "null_handle", fastlstm_get_params(NULL, p, n));
    REPORT(fastlstm_get_grads, "wrong_n", fastlstm_get_grads(m, o, 16));
    REPORT(fastlstm_get_grads, "null_out", fastlstm_get_grads(m, NULL, n));
    REPORT(fastlstm_get_grads, "null_handle", fastlstm_get_grads(NULL, p, n));
    fastlstm_get_params(m, p, n);
    REPORT(fastlstm_set_params, "wrong_n", fastlstm_set_params(m, p, n - 1));
    REPORT(fastlstm_set_params, "null_in", fastlstm_set_params(m, NULL, n));
    REPORT(fastlstm_set_params, "null_handle", fastlstm_set_params(NULL, p, n));
    p[3] = NAN;
    REPORT(fastlstm_set_params, "nan_params", fastlstm_set_params(m, p, n));
    REPORT(fastlstm_set_grads, "nan_grads", fastlstm_set_grads(m, p, n));
    REPORT(fastlstm_set_grads, "wrong_n", fastlstm_set_grads(m, p, 0));
    REPORT(fastlstm_set_grads, "null_in", fastlstm_set_grads(m, NULL, n));
    REPORT(fastlstm_set_grads, "null_handle", fastlstm_set_grads(NULL, p, n));
    char path[1024];
    snprintf(path, sizeof path, "%s/missing/nowhere.ckpt", dir);
    REPORT(fastlstm_load, "missing", fastlstm_load(path, &out));
    snprintf(path, sizeof path, "%s/garbage.ckpt", dir);
    FILE *f = fopen(path, "wb"); fputs("not a checkpoint", f); fclose(f);
    REPORT(fastlstm_load, "garbage", fastlstm_load(path, &out));
    REPORT(fastlstm_load, "null_path", fastlstm_load(NULL, &out));
    snprintf(path, sizeof path, "%s/float64.ckpt", dir);     /* written by the Python test */
    REPORT(fastlstm_load, "float64", fastlstm_load(path, &out));
    REPORT(fastlstm_save, "unwritable", fastlstm_save(m, "/proc/fastlstm-cannot-write-here.ckpt"));
    REPORT(fastlstm_save, "null_path", fastlstm_save(m, NULL));
    REPORT(fastlstm_save, "null_handle", fastlstm_save(NULL, "x.ckpt"));
    double lr = 0, lr_after = 0;
    REPORT(fastlstm_get_learning_rate, "ok", fastlstm_get_learning_rate(m, &lr));
    REPORT(fastlstm_get_learning_rate, "null_lr", fastlstm_get_learning_rate(m, NULL));
    REPORT(fastlstm_get_learning_rate, "null_handle", fastlstm_get_learning_rate(NULL, &lr));
    REPORT(fastlstm_set_learning_rate, "nan", fastlstm_set_learning_rate(m, NAN));
    REPORT(fastlstm_set_learning_rate, "negative", fastlstm_set_learning_rate(m, -1e-3));
    REPORT(fastlstm_set_learning_rate, "zero", fastlstm_set_learning_rate(m, 0));
    REPORT(fastlstm_set_learning_rate, "inf_in_float32", fastlstm_set_learning_rate(m, 1e300));
    REPORT(fastlstm_set_learning_rate, "zero_in_float32", fastlstm_set_learning_rate(m, 1e-300));
    REPORT(fastlstm_set_learning_rate, "null_handle", fastlstm_set_learning_rate(NULL, 0.1));
    REPORT(fastlstm_set_learning_rate, "ok", fastlstm_set_learning_rate(m, 1e-3));
    REPORT(fastlstm_set_first_row, "negative", fastlstm_set_first_row(m, -1));
    REPORT(fastlstm_set_first_row, "huge", fastlstm_set_first_row(m, INT64_MAX));
    REPORT(fastlstm_set_first_row, "null_handle", fastlstm_set_first_row(NULL, 4));
    REPORT(fastlstm_set_first_row, "ok", fastlstm_set_first_row(m, 0));
    fastlstm_get_learning_rate(m, &lr_after);
    printf("lr_unchanged %d\n", lr == lr_after && lr == 1e-3);
    printf("unchanged %d\n", checksum(m) == before);

    /* an update whose result overflows (SGD lr 10, gradients 3e38) is refused whole */
    fastlstm_config_init(&cfg);
    cfg.input_size = 3; cfg.hidden_size = 8; cfg.output_size = 2;
    cfg.optimizer = FASTLSTM_OPTIMIZER_SGD; cfg.learning_rate = 10;
    fastlstm_model *sgd = configured(&cfg);
    double sgd_before = checksum(sgd);
    int64_t ns = 0;
    fastlstm_param_count(sgd, &ns);
    float *g = malloc(sizeof(float) * ns);
    for (int64_t k = 0; k < ns; k++) g[k] = 3e38f;
    REPORT(fastlstm_set_grads, "ok", fastlstm_set_grads(sgd, g, ns));
    REPORT(fastlstm_apply_update, "overflowing_update", fastlstm_apply_update(sgd));
    printf("sgd_unchanged %d\n", checksum(sgd) == sgd_before);
    for (int64_t k = 0; k < ns; k++) g[k] = 1e-3f;
    REPORT(fastlstm_set_grads, "ok_small", fastlstm_set_grads(sgd, g, ns));
    REPORT(fastlstm_apply_update, "ok", fastlstm_apply_update(sgd));
    fastlstm_free(sgd);
    free(g);

    /* paths are bytes: a file name that is not UTF-8 works */
    snprintf(path, sizeof path, "%s/caf\xe9-\xff.ckpt", dir);
    REPORT(fastlstm_save, "latin1_path", fastlstm_save(m, path));
    REPORT(fastlstm_load, "latin1_path", fastlstm_load(path, &out));
    fastlstm_free(out);

    REPORT(fastlstm_train_step, "ok", fastlstm_train_step(m, x, NULL, y, NULL, 4, 2, &loss));
    printf("changed %d\n", checksum(m) != before);
    REPORT(fastlstm_compute_gradients, "ok", fastlstm_compute_gradients(m, x, NULL, y, NULL, 4, 2, &loss));
    REPORT(fastlstm_predict, "ok", fastlstm_predict(m, x, NULL, 4, 2, o, 16));
    REPORT(fastlstm_step, "ok", fastlstm_step(m, x, 2, o, 16));
    REPORT(fastlstm_reset_state, "ok", fastlstm_reset_state(m, 2));
    REPORT(fastlstm_param_count, "ok", fastlstm_param_count(m, &n));
    REPORT(fastlstm_get_grads, "ok", fastlstm_get_grads(m, p, n));
    REPORT(fastlstm_get_params, "ok", fastlstm_get_params(m, p, n));
    REPORT(fastlstm_set_params, "ok", fastlstm_set_params(m, p, n));
    snprintf(path, sizeof path, "%s/ok.ckpt", dir);
    REPORT(fastlstm_save, "ok", fastlstm_save(m, path));
    REPORT(fastlstm_load, "ok", fastlstm_load(path, &out));
    fastlstm_free(out);
    free(p);
    fastlstm_free(m);
    REPORT(fastlstm_train_step, "freed_handle", fastlstm_train_step(m, x, NULL, y, NULL, 4, 2, &loss));
    fastlstm_free(m);                                      /* a second free is harmless */
    fastlstm_free(NULL);
    printf("status_string %s\n", fastlstm_status_string(FASTLSTM_ERROR_INVALID_HANDLE));
    printf("version %d %s\n", fastlstm_version_number(), fastlstm_version_string());
    return 0;
}

/* The threads' batch: x (20, 16, 3), y (16, 2) for small_model. */
static void fill_batch(float *x, float *y) {
    for (int k = 0; k < 20 * 16 * 3; k++) x[k] = (float)((k * 37 % 101) / 101.0);
    for (int k = 0; k < 32; k++) y[k] = 0.5f;
}

/* n training steps of m on fill_batch's batch; 1 (and the error on stderr) if one fails. */
static int train_steps(fastlstm_model *m, const float *x, const float *y, int n) {
    double loss;
    for (int s = 0; s < n; s++)
        if (fastlstm_train_step(m, x, NULL, y, NULL, 20, 16, &loss) != FASTLSTM_OK) {
            fprintf(stderr, "thread: %s\n", fastlstm_last_error());
            return 1;
        }
    return 0;
}

static void *worker(void *arg) {
    fastlstm_model *m = small_model((uint64_t)(uintptr_t)arg);
    float x[20 * 16 * 3], y[16 * 2];
    fill_batch(x, y);
    if (train_steps(m, x, y, 50)) return (void *)1;
    fastlstm_free(m);
    fastlstm_model *big = model(64, 256, 1, (uint64_t)(uintptr_t)arg);   /* a parallel stream step */
    float o[1];
    for (int s = 0; s < 20; s++)
        if (fastlstm_step(big, x + 3 * s, 1, o, 1) != FASTLSTM_OK) {
            fprintf(stderr, "thread step: %s\n", fastlstm_last_error());
            return (void *)1;
        }
    fastlstm_free(big);
    return NULL;
}

static fastlstm_model *shared_model;
static float shared_x[20 * 16 * 3], shared_y[32];

static void *shared_worker(void *arg) {
    (void)arg;
    return train_steps(shared_model, shared_x, shared_y, 25) ? (void *)1 : NULL;
}

/* n threads train one handle on the same batch, 25 steps each; the calls take turns, so the
 * weights equal 25 n steps made on one thread (the same batch every step: order-free). */
static int shared(int n) {
    fill_batch(shared_x, shared_y);
    shared_model = small_model(7);
    fastlstm_model *serial = small_model(7);
    pthread_t t[64];
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, shared_worker, NULL);
    int bad = 0;
    for (int i = 0; i < n; i++) { void *r; pthread_join(t[i], &r); bad += r != NULL; }
    bad += train_steps(serial, shared_x, shared_y, 25 * n);
    int64_t np_ = 0;
    fastlstm_param_count(serial, &np_);
    float *a = malloc(sizeof(float) * np_), *b = malloc(sizeof(float) * np_);
    fastlstm_get_params(shared_model, a, np_);
    fastlstm_get_params(serial, b, np_);
    printf("shared %d failed %d equal %d\n", n, bad, memcmp(a, b, sizeof(float) * np_) == 0);
    free(a); free(b);
    fastlstm_free(shared_model);
    fastlstm_free(serial);
    return bad != 0;
}

static int threads(int n) {
    pthread_t t[64];
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    int bad = 0;
    for (int i = 0; i < n; i++) { void *r; pthread_join(t[i], &r); bad += r != NULL; }
    printf("threads %d failed %d\n", n, bad);
    return bad != 0;
}

static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0; fclose(f); }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int leak(int steps) {
    fastlstm_model *m = small_model(3);
    float x[10 * 8 * 3], y[8 * 2], o[8 * 2];
    for (int k = 0; k < 240; k++) x[k] = (float)(k % 13) / 13;
    for (int k = 0; k < 16; k++) y[k] = 0.25f;
    double loss;
    long early = 0;
    for (int s = 1; s <= steps; s++) {
        if (fastlstm_train_step(m, x, NULL, y, NULL, 10, 8, &loss) || fastlstm_predict(m, x, NULL, 10, 8, o, 16)
            || fastlstm_step(m, x, 8, o, 16)) { fprintf(stderr, "%s\n", fastlstm_last_error()); return 1; }
        if (s == steps / 5) early = rss_kib();
    }
    printf("rss_kib %ld %ld\n", early, rss_kib());
    fastlstm_free(m);
    return 0;
}

/* n models created and freed, as a server making one a request would: each freed handle
 * is refused from then on, and the library keeps nothing of it. */
static int churn(int n) {
    long early = 0;
    for (int s = 1; s <= n; s++) {
        fastlstm_model *m = small_model((uint64_t)s);
        int64_t count;
        fastlstm_free(m);
        if (fastlstm_param_count(m, &count) != FASTLSTM_ERROR_INVALID_HANDLE) {
            fprintf(stderr, "model %d: a freed handle was taken\n", s);
            return 1;
        }
        if (s == n / 5) early = rss_kib();
    }
    printf("rss_kib %ld %ld\n", early, rss_kib());
    return 0;
}

/* data file: int64 T, B, D, O, steps, seed, V; then per step the inputs (x[T][B][D] float32,
 * or with V >= 1 token ids[T][B] int64 for an embedding of width D) and y[B][O] float32.
 * Trains, prints each loss, then the predictions for the last inputs and one streaming step
 * on their first time step, and saves the model to `out`. */
static int fromfile(const char *data, const char *out) {
    FILE *f = fopen(data, "rb");
    int64_t h[7];
    if (!f || fread(h, sizeof h, 1, f) != 1) return 1;
    int64_t T = h[0], B = h[1], D = h[2], O = h[3], steps = h[4], V = h[6];
    fastlstm_config cfg;
    fastlstm_config_init(&cfg);
    cfg.input_size = D; cfg.hidden_size = 16; cfg.output_size = O; cfg.num_layers = 2;
    cfg.learning_rate = 1e-2; cfg.clip = 1.0; cfg.seed = (uint64_t)h[5]; cfg.vocab_size = V;
    fastlstm_model *m = NULL;
    if (fastlstm_create(&cfg, &m)) return 1;
    size_t nx = V ? (size_t)(T * B) : (size_t)(T * B * D), width = V ? sizeof(int64_t) : sizeof(float);
    void *x = malloc(width * nx);
    float *y = malloc(sizeof(float) * B * O), *p = malloc(sizeof(float) * B * O);
    double loss;
    for (int64_t s = 0; s < steps; s++) {
        if (fread(x, width, nx, f) != nx || fread(y, sizeof(float), B * O, f) != (size_t)(B * O)) return 1;
        int rc = V ? fastlstm_train_step_ids(m, x, NULL, y, NULL, T, B, &loss)
                   : fastlstm_train_step(m, x, NULL, y, NULL, T, B, &loss);
        if (rc) { fprintf(stderr, "%s\n", fastlstm_last_error()); return 1; }
        printf("loss %.9g\n", loss);
    }
    fclose(f);
    int rc = V ? fastlstm_predict_ids(m, x, NULL, T, B, p, B * O) : fastlstm_predict(m, x, NULL, T, B, p, B * O);
    for (int64_t k = 0; k < B * O && !rc; k++) printf("predict %.9g\n", p[k]);
    rc = rc ? rc : V ? fastlstm_step_ids(m, x, B, p, B * O) : fastlstm_step(m, x, B, p, B * O);
    for (int64_t k = 0; k < B * O && !rc; k++) printf("step %.9g\n", p[k]);
    free(x); free(y); free(p);
    return rc ? rc : fastlstm_save(m, out);
}

/* Loads `ckpt` and prints its predictions for x[T][B][D] read from `data` (float32), in the
 * header's time-major layout whatever the checkpoint's batch_first. */
static int predictfile(const char *ckpt, const char *data, int64_t T, int64_t B, int64_t D, int64_t O) {
    fastlstm_model *m = NULL;
    FILE *f = fopen(data, "rb");
    float *x = malloc(sizeof(float) * T * B * D), *p = malloc(sizeof(float) * B * O);
    if (!f || fread(x, sizeof(float), T * B * D, f) != (size_t)(T * B * D)) return 1;
    fclose(f);
    int rc = fastlstm_load(ckpt, &m);
    rc = rc ? rc : fastlstm_predict(m, x, NULL, T, B, p, B * O);
    if (rc) fprintf(stderr, "%s\n", fastlstm_last_error());
    for (int64_t k = 0; k < B * O && !rc; k++) printf("predict %.9g\n", p[k]);
    fastlstm_free(m);
    free(x); free(p);
    return rc;
}

static int overhead(int calls) {
    fastlstm_model *m = small_model(4);
    float x[3] = {0.1f, 0.2f, 0.3f}, o[2];
    int64_t n;
    fastlstm_step(m, x, 1, o, 2);
    double t0 = now();
    for (int i = 0; i < calls; i++) fastlstm_param_count(m, &n);
    double t1 = now();
    for (int i = 0; i < calls; i++) fastlstm_step(m, x, 1, o, 2);
    double t2 = now();
    printf("us_per_call count %.3f step %.3f\n", (t1 - t0) / calls * 1e6, (t2 - t1) / calls * 1e6);
    fastlstm_free(m);
    return 0;
}

static int startup(void) {
    double t0 = now();
    fastlstm_config cfg;
    fastlstm_config_init(&cfg);
    cfg.input_size = 2; cfg.hidden_size = 64; cfg.output_size = 1;
    fastlstm_model *m = NULL;
    if (fastlstm_create(&cfg, &m)) { fprintf(stderr, "%s\n", fastlstm_last_error()); return 1; }
    static float x[100 * 64 * 2], y[64];
    double loss;
    if (fastlstm_train_step(m, x, NULL, y, NULL, 100, 64, &loss)) return 1;
    printf("seconds_to_first_step %.3f\n", now() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "errors")) return errors(argv[2]);
    if (!strcmp(argv[1], "threads")) return threads(atoi(argv[2]));
    if (!strcmp(argv[1], "shared")) return shared(atoi(argv[2]));
    if (!strcmp(argv[1], "leak")) return leak(atoi(argv[2]));
    if (!strcmp(argv[1], "churn")) return churn(atoi(argv[2]));
    if (!strcmp(argv[1], "fromfile")) return fromfile(argv[2], argv[3]);
    if (!strcmp(argv[1], "overhead")) return overhead(atoi(argv[2]));
    if (!strcmp(argv[1], "predictfile"))
        return predictfile(argv[2], argv[3], atoll(argv[4]), atoll(argv[5]), atoll(argv[6]), atoll(argv[7]));
    if (!strcmp(argv[1], "startup")) return startup();
    return 2;
}
