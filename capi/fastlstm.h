/*
 * fastlstm.h: the C API of fastlstm, a compact, fast LSTM training engine.
 *
 * Build the library (once, on the machine that runs it) from an environment where fastlstm
 * is installed:
 *     python -m fastlstm.capi build --out DIR      -> DIR/libfastlstm.so, DIR/fastlstm.h
 *     cc prog.c $(python -m fastlstm.capi --cflags --libs --dir DIR) -o prog
 *
 * The library embeds the Python interpreter of the environment it was built in (found
 * without PYTHONPATH or PYTHONHOME, also under `env -i`); it starts on the first call of any
 * function below and stays for the life of the process.
 *
 * Conventions
 *  - Language: C99 or later (stdint.h, inline), or C++ (the declarations are extern "C").
 *  - Every function returning int returns a status code: FASTLSTM_OK (0) or a
 *    FASTLSTM_ERROR_* value; on error fastlstm_last_error() describes it and the model is
 *    exactly as it was before the call (fastlstm_train_step and fastlstm_apply_update
 *    say what NON_FINITE leaves). Each function lists the statuses it returns; any of them
 *    may also return FASTLSTM_ERROR_INIT (the embedded Python failed to start) and
 *    FASTLSTM_ERROR_INTERNAL (a bug: please report it). New status codes may be added in
 *    later versions, so treat any non-zero status as failure.
 *  - Compatibility: before 1.0 the ABI may change with the minor version (check
 *    fastlstm_version_number() against FASTLSTM_VERSION_NUMBER). fastlstm_config carries
 *    its own size, so it can grow without breaking programs compiled against it.
 *  - Models are float32 in C: every array here is float (labels int32, lengths and token
 *    ids int64).
 *    fastlstm_load refuses a float64 checkpoint (INVALID_ARGUMENT, saying so), so every
 *    handle, and so every training, predict and step call, is float32.
 *  - Out of scope, as in any C API: a buffer shorter than the sizes the caller declares
 *    for it (T*B*D floats for x, say) is the caller's bug; the library cannot see it.
 *    Sizes that declare a buffer larger than this machine's memory (or the process's
 *    cgroup limit) are refused, INVALID_ARGUMENT, before anything of it is read.
 *  - Arrays are dense, C order (row-major), float32 unless said, owned by the caller; the
 *    library reads inputs in place (no copies) and writes outputs into caller buffers whose
 *    length in elements the caller passes. Sizes are int64_t.
 *  - Sequences are time-major: x[T][B][D] (T steps, B sequences, D inputs), also for a
 *    checkpoint of a Model made with batch_first in Python.
 *  - Threads: calls on one model handle from several threads take turns, each call whole,
 *    in an order the threads decide (a compute_gradients / apply_update pair is two
 *    calls). Different handles may be used from different threads at once (their kernels
 *    then run in parallel). The version, status-string and last-error functions may be
 *    called from any thread.
 *  - fork(): a child process must not call fastlstm if the parent already has (the
 *    embedded interpreter and its OpenMP thread pool do not survive fork); exec() first.
 *  - The process stays the program's: SIGINT (Ctrl-C) keeps what the program set before
 *    its first call (the default still ends it; a handler of its own still runs), the
 *    locale stays as the program set it, and the environment gains only Numba's NUMBA_*
 *    settings (its threading layer; its thread count under a CPU quota; its cache folder
 *    when the install folder is read-only).
 *  - Numba compiles fastlstm's kernels on first use and caches them on disk: in the
 *    package's __pycache__ when writable, else in $NUMBA_CACHE_DIR, else
 *    $XDG_CACHE_HOME/fastlstm, else $HOME/.cache/fastlstm, else /tmp/fastlstm-cache-UID.
 */
#ifndef FASTLSTM_H
#define FASTLSTM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#  define FASTLSTM_API __attribute__((visibility("default")))
#else
#  define FASTLSTM_API
#endif

/* Version of this header; fastlstm_version_number() gives the library's. */
#define FASTLSTM_VERSION_MAJOR 0
#define FASTLSTM_VERSION_MINOR 9
#define FASTLSTM_VERSION_PATCH 0
#define FASTLSTM_VERSION_NUMBER (FASTLSTM_VERSION_MAJOR * 10000 + FASTLSTM_VERSION_MINOR * 100 + FASTLSTM_VERSION_PATCH)

/* Status codes (values are pinned). */
#define FASTLSTM_OK                     0
#define FASTLSTM_ERROR_NULL_POINTER     1   /* a required pointer argument was NULL */
#define FASTLSTM_ERROR_INVALID_ARGUMENT 2   /* a size, shape, label or setting out of range */
#define FASTLSTM_ERROR_NON_FINITE       3   /* NaN/Inf in an input, or a result that would not be finite */
#define FASTLSTM_ERROR_INVALID_HANDLE   4   /* a freed or foreign model handle */
#define FASTLSTM_ERROR_IO               5   /* a file could not be read or written */
#define FASTLSTM_ERROR_BAD_CHECKPOINT   6   /* a truncated, corrupt, foreign or wrong-version file */
#define FASTLSTM_ERROR_BUFFER_TOO_SMALL 7   /* an output buffer shorter than the result */
#define FASTLSTM_ERROR_INIT             8   /* the embedded interpreter failed to start */
#define FASTLSTM_ERROR_INTERNAL         9   /* an unexpected failure inside the library */

/* Settings of fastlstm_config. */
#define FASTLSTM_CELL_LSTM   0
#define FASTLSTM_CELL_RNN    1
#define FASTLSTM_CELL_GRU    2   /* from 0.4: PyTorch's GRU (gates r, z, n; b_hn inside r ⊙ (·)) */
#define FASTLSTM_CELL_RNN_RELU 3 /* from 0.8: the RNN with ReLU, h = max(W [x ; h] + b, 0) (PyTorch's
                                  * nn.RNN(nonlinearity="relu")); FASTLSTM_CELL_RNN is the tanh one */
#define FASTLSTM_LOSS_MSE    0   /* regression: float targets */
#define FASTLSTM_LOSS_XENT   1   /* classification: int32 labels, softmax cross-entropy */
#define FASTLSTM_OUTPUT_LAST  0  /* one prediction per sequence, at its last real step */
#define FASTLSTM_OUTPUT_EVERY 1  /* one prediction per step (padded steps ignored) */
#define FASTLSTM_OPTIMIZER_ADAM 0
#define FASTLSTM_OPTIMIZER_SGD  1
#define FASTLSTM_OPTIMIZER_ADAMW 2   /* from 0.6: Adam with decoupled weight decay (PyTorch's AdamW) */

/* A model: LSTM (or GRU, or RNN) layers, a dense output head, a loss and an optimizer. Opaque. */
typedef struct fastlstm_model fastlstm_model;

/* What fastlstm_create builds. Fill it with fastlstm_config_init, then change fields.
 * The struct only ever grows at its end. struct_size, set by fastlstm_config_init, is its
 * size as the caller's program was compiled: the library reads only the fields that size
 * holds and takes the defaults for the rest, so a program compiled against an older header
 * keeps working; a size that ends inside a field or beyond the library's struct is refused
 * (INVALID_ARGUMENT). */
typedef struct fastlstm_config {
    uint32_t struct_size;  /* sizeof(fastlstm_config) of the caller's header; set by fastlstm_config_init */
    int64_t input_size;    /* D >= 1 */
    int64_t hidden_size;   /* H >= 1 */
    int64_t output_size;   /* O >= 1: outputs (mse), or O >= 2 classes (xent) */
    int64_t num_layers;    /* >= 1 */
    int32_t cell;          /* FASTLSTM_CELL_*; default LSTM */
    int32_t loss;          /* FASTLSTM_LOSS_*; default MSE */
    int32_t output;        /* FASTLSTM_OUTPUT_*; default LAST */
    int32_t optimizer;     /* FASTLSTM_OPTIMIZER_*; default ADAM */
    double learning_rate;  /* > 0 and <= FLT_MAX (0 or inf in float32 is refused); default 1e-3 */
    double momentum;       /* SGD, in [0, 1); default 0 */
    double beta1, beta2;   /* Adam, in [0, 1); defaults 0.9, 0.999 */
    double eps;            /* Adam, > 0 and <= FLT_MAX (as learning_rate); default 1e-8 */
    double clip;           /* max global gradient norm; 0 = no clipping (default) */
    double forget_bias;    /* LSTM forget-gate bias at initialisation, |b| <= FLT_MAX; default 1 */
    uint64_t seed;         /* initialisation seed; default 0 */
    /* from 0.3 */
    int32_t bidirectional; /* 1: a reverse direction beside every layer (PyTorch's semantics; the
                            * model then takes whole sequences only: fastlstm_step returns
                            * INVALID_ARGUMENT); 0 (default) or 1 */
    double dropout;        /* p in [0, 1) on the outputs of every layer but the last, in training
                            * steps only (predict and step never drop), so nothing with
                            * num_layers = 1; default 0 */
    /* from 0.4 */
    int64_t proj_size;     /* LSTM only: 1..hidden_size-1 projects h to proj_size units (LSTMP, PyTorch's
                            * proj_size): h, and the outputs the head reads, are proj_size wide, the
                            * cell state hidden_size; 0 (default): none */
    /* from 0.5 */
    int64_t vocab_size;    /* >= 1: token inputs. The model takes ids in 0..vocab_size-1 through the
                            * *_ids functions and looks each up in an embedding E (vocab_size x
                            * input_size) that it learns with the rest (input_size is then the
                            * embedding's width); the float-input functions refuse it. 0 (default):
                            * float inputs x[T][B][input_size] */
    /* from 0.6 */
    double weight_decay;   /* >= 0; default 0 (also for ADAMW: set it, PyTorch's AdamW takes 0.01).
                            * SGD and ADAM add weight_decay * w to the gradient (L2, PyTorch's
                            * weight_decay); ADAMW shrinks w by learning_rate * weight_decay each step,
                            * apart from the gradient, and needs that product < 1 */
} fastlstm_config;

/* The library's version as MAJOR*10000 + MINOR*100 + PATCH; compare with
 * FASTLSTM_VERSION_NUMBER to check that header and library agree. Any thread; never fails. */
FASTLSTM_API int fastlstm_version_number(void);

/* The library's version as "MAJOR.MINOR.PATCH" (static storage). Any thread. */
FASTLSTM_API const char *fastlstm_version_string(void);

/* A static English description of a status code ("unknown status" for others). Any thread. */
FASTLSTM_API const char *fastlstm_status_string(int status);

/* The message of the last error in the calling thread ("" if none), owned by the library
 * and valid until the calling thread's next fastlstm call. */
FASTLSTM_API const char *fastlstm_last_error(void);

/* Fill the first `size` bytes of *cfg with the defaults listed in fastlstm_config (sizes 1)
 * and set cfg->struct_size = size. Call it as fastlstm_config_init(cfg), which passes the
 * size this header gives the struct. NULL is ignored. */
FASTLSTM_API void fastlstm_config_init_sized(fastlstm_config *cfg, uint32_t size);
static inline void fastlstm_config_init(fastlstm_config *cfg) {
    fastlstm_config_init_sized(cfg, sizeof *cfg);      /* a constant that fits: no cast (C++ warns of C casts) */
}

/* Create a model from *cfg and store its handle in *out (left untouched on error). Free it
 * with fastlstm_free. Handles look random and are never issued twice, so a freed handle is
 * always refused (INVALID_HANDLE) and a guessed pointer almost surely; freed models leave
 * nothing behind, however many a program creates.
 * INVALID_ARGUMENT: a size < 1, num_layers > 1024, a model beyond the machine's memory, an
 * unknown setting, or a hyperparameter out of its range or NaN (clip NaN or < 0 included).
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT. */
FASTLSTM_API int fastlstm_create(const fastlstm_config *cfg, fastlstm_model **out);

/* Release a model. NULL is a harmless no-op; a freed or foreign handle is ignored. */
FASTLSTM_API void fastlstm_free(fastlstm_model *model);

/* One training step on a batch: forward, loss, backward, clipping, optimizer update.
 *   x       [T][B][D] inputs
 *   lengths [B] each in 1..T, or NULL for all T (past its length a sequence is padding)
 *   targets for LOSS_MSE: [B][O] (OUTPUT_LAST) or [T][B][O] (OUTPUT_EVERY); else NULL
 *   labels  for LOSS_XENT: [B] or [T][B] in 0..O-1 (a padded step's may be anything); else NULL
 *   loss    receives the batch's mean loss before the update (may be NULL)
 * NON_FINITE: NaN/Inf in an input, a non-finite loss or gradient, or an update whose
 * result would not be finite (overflow). For the last three the parameters, the
 * optimizer's state and the step count are unchanged, the gradient array holds what this
 * batch gave, and the model's count of refused steps (kept in checkpoints) grows by one.
 * On any other error (a NaN input included) nothing changes.
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_train_step(fastlstm_model *model, const float *x, const int64_t *lengths,
                                     const float *targets, const int32_t *labels,
                                     int64_t T, int64_t B, double *loss);

/* The first half of a training step: gradients of the batch's loss into the model's
 * gradient array (read it with fastlstm_get_grads); parameters are not changed. Arguments
 * as fastlstm_train_step. With fastlstm_set_grads and fastlstm_apply_update a driver can sum
 * gradients across processes (e.g. MPI_Allreduce) in between. NON_FINITE: NaN/Inf in an
 * input (the gradients are then unchanged).
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_compute_gradients(fastlstm_model *model, const float *x, const int64_t *lengths,
                                            const float *targets, const int32_t *labels,
                                            int64_t T, int64_t B, double *loss);

/* The second half: clip the model's current gradients and take one optimizer step.
 * NON_FINITE: gradients not finite, or an update whose result would not be finite; the
 * parameters and the optimizer are unchanged (as for fastlstm_train_step).
 * Returns OK, NON_FINITE, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_apply_update(fastlstm_model *model);

/* Predictions for a batch: out [B][O] (OUTPUT_LAST) or [T][B][O] (OUTPUT_EVERY, zero past
 * each length); values for LOSS_MSE, class probabilities for LOSS_XENT. out_len is the
 * length of out in floats. Does not change the model.
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, BUFFER_TOO_SMALL, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_predict(fastlstm_model *model, const float *x, const int64_t *lengths,
                                  int64_t T, int64_t B, float *out, int64_t out_len);

/* Streaming inference: one time step x [B][D] for B independent streams whose state (h, c)
 * the model keeps between calls; out [B][O] receives this step's predictions. A call with
 * another B starts B fresh streams. A bidirectional model cannot stream (INVALID_ARGUMENT).
 * NON_FINITE: a NaN/Inf in x, or a step whose new state would not be finite (a ReLU RNN's h
 * grown past the float range, or any cell's with weights near it); the state stays as it was.
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, BUFFER_TOO_SMALL, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_step(fastlstm_model *model, const float *x, int64_t B, float *out, int64_t out_len);

/* Zero the streaming state for B streams.
 * Returns OK, INVALID_ARGUMENT, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_reset_state(fastlstm_model *model, int64_t B);

/* Token inputs (from 0.5), for a model made with vocab_size >= 1 (or loaded from a checkpoint
 * of one): train_step, compute_gradients, predict and step with ids in place of x, each in
 * 0..vocab_size-1; everything else as there. The float-input functions refuse such a model
 * and these refuse the others (INVALID_ARGUMENT, saying which to call).
 *   ids  [T][B] (train, gradients, predict) or [B] (step) int64
 * INVALID_ARGUMENT also: an id out of range (nothing changes). */

/* As fastlstm_train_step. NON_FINITE: a NaN/Inf target, a non-finite loss or gradient, or
 * an overflowing update (what it leaves is as there).
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_train_step_ids(fastlstm_model *model, const int64_t *ids, const int64_t *lengths,
                                         const float *targets, const int32_t *labels,
                                         int64_t T, int64_t B, double *loss);

/* As fastlstm_compute_gradients. NON_FINITE: a NaN/Inf target (the gradients are then unchanged).
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_compute_gradients_ids(fastlstm_model *model, const int64_t *ids, const int64_t *lengths,
                                                const float *targets, const int32_t *labels,
                                                int64_t T, int64_t B, double *loss);

/* As fastlstm_predict.
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, BUFFER_TOO_SMALL, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_predict_ids(fastlstm_model *model, const int64_t *ids, const int64_t *lengths,
                                      int64_t T, int64_t B, float *out, int64_t out_len);

/* As fastlstm_step: one id per stream. NON_FINITE: a step that would overflow the state, as there.
 * Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, BUFFER_TOO_SMALL, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_step_ids(fastlstm_model *model, const int64_t *ids, int64_t B, float *out, int64_t out_len);

/* Write a checkpoint (weights, optimizer state, configuration): the same file format that
 * Python's Model.save / fastlstm.load use. Atomic: a crash never leaves a half-written file
 * (a temporary that a killed writer left beside it is removed by the next save). Paths are
 * bytes, passed to the operating system as they are (no encoding is assumed).
 * Returns OK, NULL_POINTER, IO, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_save(fastlstm_model *model, const char *path);

/* Load a checkpoint into a new handle in *out. IO: the path is missing or unreadable.
 * BAD_CHECKPOINT: anything wrong with the file (not a regular file, truncated, corrupt,
 * foreign, a wrong version, values out of range, sizes that do not match its
 * configuration); checked before anything is built, so a hostile file costs at most what
 * its configuration implies. INVALID_ARGUMENT: a float64 model (the C ABI runs float32;
 * save a float32 copy in Python: fastlstm.load(path).astype("float32").save(path32)).
 * Returns OK, NULL_POINTER, IO, BAD_CHECKPOINT, INVALID_ARGUMENT. */
FASTLSTM_API int fastlstm_load(const char *path, fastlstm_model **out);

/* The number of parameters (and of gradients) in *n.
 * Returns OK, NULL_POINTER, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_param_count(fastlstm_model *model, int64_t *n);

/* Copy the flat parameter or gradient array out to / in from a caller buffer of exactly
 * n = fastlstm_param_count floats (INVALID_ARGUMENT otherwise). Layout: for each layer (and,
 * bidirectional, each direction, forward first) W (R x (D_l + P)), b (G) and, with proj_size,
 * W_hr (P x H); then the head's V (O x P·dirs) and bias (O); then E (vocab_size x input_size)
 * for token inputs. P is proj_size or H; D_l is input_size for the first layer, else P·dirs.
 * LSTM: R = G = 4H, rows a, i, f, o. GRU: R = 3H, rows n, r, z; G = 4H: b_in, b_r, b_z, b_hn.
 * RNN: R = G = H. (docs/derivation.md names every block.)
 * The setters refuse non-finite values (NON_FINITE) and change nothing then. */

/* Returns OK, NULL_POINTER, INVALID_ARGUMENT, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_get_params(fastlstm_model *model, float *out, int64_t n);
/* Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_set_params(fastlstm_model *model, const float *in, int64_t n);
/* Returns OK, NULL_POINTER, INVALID_ARGUMENT, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_get_grads(fastlstm_model *model, float *out, int64_t n);
/* Returns OK, NULL_POINTER, INVALID_ARGUMENT, NON_FINITE, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_set_grads(fastlstm_model *model, const float *in, int64_t n);

/* From 0.7: the optimizer's learning rate, read into *lr or set, for a schedule of the
 * caller's own (warm-up, decay) between training steps. A rate set must be > 0 and hold in
 * float32 (<= FLT_MAX, and not 0 there), as cfg->learning_rate; for ADAMW, lr * weight_decay
 * must stay < 1. A refused rate changes nothing. Checkpoints keep the rate last set. */

/* Returns OK, NULL_POINTER, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_get_learning_rate(fastlstm_model *model, double *lr);
/* Returns OK, INVALID_ARGUMENT, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_set_learning_rate(fastlstm_model *model, double lr);

/* From 0.9: data parallelism with dropout. A driver that splits each batch among processes
 * (capi/examples/mpi_train.c) passes each its part to fastlstm_compute_gradients; first_row
 * says at which row of the whole batch the part begins, so that each row draws the dropout
 * mask it draws in the whole batch (as Python's DataParallel does). Without it every part's
 * rows count from 0, and the parts' rows share their masks. It applies to
 * fastlstm_compute_gradients and fastlstm_compute_gradients_ids, stays until set again, and
 * is not kept in checkpoints; 0 (the default) for a whole batch. 0 <= first_row < 2^62.
 * Returns OK, INVALID_ARGUMENT, INVALID_HANDLE. */
FASTLSTM_API int fastlstm_set_first_row(fastlstm_model *model, int64_t first_row);

#ifdef __cplusplus
}
#endif
#endif /* FASTLSTM_H */
