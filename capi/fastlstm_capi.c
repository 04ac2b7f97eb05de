/*
 * fastlstm_capi.c: the exported functions of libfastlstm.so (capi/fastlstm.h is their
 * specification). Each is a thin wrapper that starts the embedded Python once, checks
 * that it started, and calls its implementation in fastlstm/_capi_impl.py.
 *
 * This file is compiled by `python -m fastlstm.capi build` through cffi's embedding mode,
 * which puts before it Python.h and the prototypes of the `_fl_py_*` implementations
 * (generated from the one list in fastlstm/capi.py) and defines FL_PYTHON (the Python of
 * the environment the library is built in) and FL_VERSION.
 *
 * Start-up, and why: cffi alone would start Python with a bare Py_InitializeEx, which
 * guesses its home from PATH (and under `env -i` finds the wrong standard library), and
 * every function without a Python body would return 0, which here means success, when the
 * start fails. So fl_start() starts the interpreter itself with PyConfig.executable =
 * FL_PYTHON (found without PYTHONPATH or PYTHONHOME), without Python's signal handlers
 * (the host owns SIGINT, which it keeps as it set it), leaving the host's locale alone (in
 * the C locale Python runs in its UTF-8 mode), releases the GIL for every thread, then runs
 * cffi's own start-up, whose init code sets the ready flag last; fl_enter() refuses every
 * call while it is unset.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "fastlstm.h"

static pthread_once_t fl_once = PTHREAD_ONCE_INIT;
static volatile int fl_ready = 0;
static __thread char fl_error[4096];

void _fl_set_ready(void) { fl_ready = 1; }
void _fl_set_error(const char *msg) { snprintf(fl_error, sizeof fl_error, "%s", msg); }

/* Start the interpreter of the environment this library was built in (FL_PYTHON), unless
 * the host process already runs one, then cffi's own initialisation and our init code. */
static void fl_start(void) {
    if (!Py_IsInitialized()) {
        PyPreConfig pre;
        PyPreConfig_InitPythonConfig(&pre);
        pre.configure_locale = 0;   /* the host's locale stays, and its environment (no LC_CTYPE=C.UTF-8) */
        PyStatus st = Py_PreInitialize(&pre);
        PyConfig config;
        PyConfig_InitPythonConfig(&config);
        config.install_signal_handlers = 0;          /* the host owns SIGINT */
        if (!PyStatus_Exception(st))
            st = PyConfig_SetBytesString(&config, &config.executable, FL_PYTHON);
        if (!PyStatus_Exception(st))
            st = Py_InitializeFromConfig(&config);
        PyConfig_Clear(&config);
        if (PyStatus_Exception(st)) {
            fprintf(stderr, "fastlstm: cannot start Python %s: %s\n", FL_PYTHON,
                    st.err_msg ? st.err_msg : "unknown error");
            return;
        }
        /* CPython's _signal module, on its first import, puts Python's SIGINT handler (it only
         * sets a flag for the next bytecode) in place of SIG_DFL, whatever the config says, and
         * fastlstm imports it: the host's Ctrl-C would then not stop the host, and would come
         * back as KeyboardInterrupt from its next call. Import it now, and give SIG_DFL back. */
        PyRun_SimpleString("import _signal\n"
                           "if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:\n"
                           "    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)\n");
        PyEval_SaveThread();                          /* release the GIL for every thread */
    }
    cffi_start_python();                              /* runs the init code; sets fl_ready */
}

static int fl_enter(void) {
    pthread_once(&fl_once, fl_start);
    fl_error[0] = 0;
    if (!fl_ready) {
        snprintf(fl_error, sizeof fl_error, "the embedded Python (%s) failed to start; its "
                 "error was printed on stderr", FL_PYTHON);
        return FASTLSTM_ERROR_INIT;
    }
    return FASTLSTM_OK;
}

#define FL_ID(m) ((int64_t)(uintptr_t)(m))
#define FL_ENTER() do { int rc_ = fl_enter(); if (rc_) return rc_; } while (0)

int fastlstm_version_number(void) { return FASTLSTM_VERSION_NUMBER; }
const char *fastlstm_version_string(void) { return FL_VERSION; }
const char *fastlstm_last_error(void) { return fl_error; }

const char *fastlstm_status_string(int status) {
    switch (status) {
    case FASTLSTM_OK: return "ok";
    case FASTLSTM_ERROR_NULL_POINTER: return "a required pointer argument was NULL";
    case FASTLSTM_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case FASTLSTM_ERROR_NON_FINITE: return "non-finite value (NaN or Inf)";
    case FASTLSTM_ERROR_INVALID_HANDLE: return "invalid (freed or foreign) model handle";
    case FASTLSTM_ERROR_IO: return "file could not be read or written";
    case FASTLSTM_ERROR_BAD_CHECKPOINT: return "not a readable fastlstm checkpoint";
    case FASTLSTM_ERROR_BUFFER_TOO_SMALL: return "output buffer too small";
    case FASTLSTM_ERROR_INIT: return "the embedded Python failed to start";
    case FASTLSTM_ERROR_INTERNAL: return "internal error";
    default: return "unknown status";
    }
}

void fastlstm_config_init_sized(fastlstm_config *cfg, uint32_t size) {
    if (!cfg) return;
    fastlstm_config d;                     /* the defaults; the caller's struct gets `size` bytes of them */
    memset(&d, 0, sizeof d);
    d.input_size = d.hidden_size = d.output_size = d.num_layers = 1;
    d.cell = FASTLSTM_CELL_LSTM;
    d.loss = FASTLSTM_LOSS_MSE;
    d.output = FASTLSTM_OUTPUT_LAST;
    d.optimizer = FASTLSTM_OPTIMIZER_ADAM;
    d.learning_rate = 1e-3;
    d.beta1 = 0.9;
    d.beta2 = 0.999;
    d.eps = 1e-8;
    d.forget_bias = 1.0;
    memcpy(cfg, &d, size < sizeof d ? size : sizeof d);
    if (size >= sizeof cfg->struct_size) cfg->struct_size = size;
}

/* The sizes a caller's fastlstm_config may have: it ends after one of these fields (the
 * struct only grows at its end), possibly padded to 8 bytes. */
#define FL_END(f) (offsetof(fastlstm_config, f) + sizeof(((fastlstm_config *)0)->f))
static const size_t fl_config_ends[] = {
    FL_END(num_layers), FL_END(cell), FL_END(loss), FL_END(output), FL_END(optimizer), FL_END(learning_rate),
    FL_END(momentum), FL_END(beta1), FL_END(beta2), FL_END(eps), FL_END(clip), FL_END(forget_bias), FL_END(seed),
    FL_END(bidirectional), FL_END(dropout), FL_END(proj_size), FL_END(vocab_size), FL_END(weight_decay)};

/* *full = the defaults overlaid with the fields the caller's struct holds; 0 if its size
 * is one the library knows, else INVALID_ARGUMENT with the message set. */
static int fl_full_config(const fastlstm_config *cfg, fastlstm_config *full) {
    uint32_t size = cfg->struct_size;
    for (size_t k = 0; k < sizeof fl_config_ends / sizeof *fl_config_ends; k++) {
        size_t end = fl_config_ends[k];
        if (size == end || size == (end + 7) / 8 * 8) {
            fastlstm_config_init_sized(full, (uint32_t)sizeof *full);
            memcpy(full, cfg, size < sizeof *full ? size : sizeof *full);
            full->struct_size = (uint32_t)sizeof *full;
            return FASTLSTM_OK;
        }
    }
    snprintf(fl_error, sizeof fl_error, "cfg->struct_size = %u is no size of fastlstm_config that this "
             "library (%s, whose struct has %zu bytes) knows; fill the struct with fastlstm_config_init",
             (unsigned)size, FL_VERSION, sizeof *full);
    return FASTLSTM_ERROR_INVALID_ARGUMENT;
}

/* The handle for the id an implementation made, stored only on success (*out is left
 * untouched on error, as the header promises). */
static int fl_handle(int rc, int64_t id, fastlstm_model **out) {
    if (rc == FASTLSTM_OK) *out = (fastlstm_model *)(uintptr_t)id;
    return rc;
}

int fastlstm_create(const fastlstm_config *cfg, fastlstm_model **out) {
    FL_ENTER();
    fastlstm_config full;
    if (cfg) {
        int bad = fl_full_config(cfg, &full);
        if (bad) return bad;
    }
    int64_t id = 0;
    int rc = _fl_py_create(cfg ? &full : NULL, out ? &id : NULL);
    return fl_handle(rc, id, out);
}

int fastlstm_load(const char *path, fastlstm_model **out) {
    FL_ENTER();
    int64_t id = 0;
    int rc = _fl_py_load(path, out ? &id : NULL);
    return fl_handle(rc, id, out);
}

void fastlstm_free(fastlstm_model *model) {
    if (model == NULL || fl_enter() != FASTLSTM_OK) return;
    _fl_py_free(FL_ID(model));
}

int fastlstm_train_step(fastlstm_model *m, const float *x, const int64_t *lengths, const float *targets,
                        const int32_t *labels, int64_t T, int64_t B, double *loss) {
    FL_ENTER();
    return _fl_py_train(FL_ID(m), x, 0, lengths, targets, labels, T, B, loss, 1);
}

int fastlstm_compute_gradients(fastlstm_model *m, const float *x, const int64_t *lengths, const float *targets,
                               const int32_t *labels, int64_t T, int64_t B, double *loss) {
    FL_ENTER();
    return _fl_py_train(FL_ID(m), x, 0, lengths, targets, labels, T, B, loss, 0);
}

int fastlstm_apply_update(fastlstm_model *m) { FL_ENTER(); return _fl_py_apply(FL_ID(m)); }

int fastlstm_predict(fastlstm_model *m, const float *x, const int64_t *lengths, int64_t T, int64_t B,
                     float *out, int64_t out_len) {
    FL_ENTER();
    return _fl_py_predict(FL_ID(m), x, 0, lengths, T, B, out, out_len);
}

int fastlstm_step(fastlstm_model *m, const float *x, int64_t B, float *out, int64_t out_len) {
    FL_ENTER();
    return _fl_py_step(FL_ID(m), x, 0, B, out, out_len);
}

int fastlstm_train_step_ids(fastlstm_model *m, const int64_t *ids, const int64_t *lengths, const float *targets,
                            const int32_t *labels, int64_t T, int64_t B, double *loss) {
    FL_ENTER();
    return _fl_py_train(FL_ID(m), ids, 1, lengths, targets, labels, T, B, loss, 1);
}

int fastlstm_compute_gradients_ids(fastlstm_model *m, const int64_t *ids, const int64_t *lengths,
                                   const float *targets, const int32_t *labels, int64_t T, int64_t B, double *loss) {
    FL_ENTER();
    return _fl_py_train(FL_ID(m), ids, 1, lengths, targets, labels, T, B, loss, 0);
}

int fastlstm_predict_ids(fastlstm_model *m, const int64_t *ids, const int64_t *lengths, int64_t T, int64_t B,
                         float *out, int64_t out_len) {
    FL_ENTER();
    return _fl_py_predict(FL_ID(m), ids, 1, lengths, T, B, out, out_len);
}

int fastlstm_step_ids(fastlstm_model *m, const int64_t *ids, int64_t B, float *out, int64_t out_len) {
    FL_ENTER();
    return _fl_py_step(FL_ID(m), ids, 1, B, out, out_len);
}

int fastlstm_reset_state(fastlstm_model *m, int64_t B) { FL_ENTER(); return _fl_py_reset(FL_ID(m), B); }
int fastlstm_save(fastlstm_model *m, const char *path) { FL_ENTER(); return _fl_py_save(FL_ID(m), path); }
int fastlstm_param_count(fastlstm_model *m, int64_t *n) { FL_ENTER(); return _fl_py_count(FL_ID(m), n); }
int fastlstm_get_params(fastlstm_model *m, float *out, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), out, n, 0, 0); }
int fastlstm_set_params(fastlstm_model *m, const float *in, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), (float *)in, n, 0, 1); }
int fastlstm_get_grads(fastlstm_model *m, float *out, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), out, n, 1, 0); }
int fastlstm_set_grads(fastlstm_model *m, const float *in, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), (float *)in, n, 1, 1); }
int fastlstm_get_learning_rate(fastlstm_model *m, double *lr) { FL_ENTER(); return _fl_py_lr(FL_ID(m), lr, 0, 0); }
int fastlstm_set_learning_rate(fastlstm_model *m, double lr) { FL_ENTER(); return _fl_py_lr(FL_ID(m), NULL, lr, 1); }
int fastlstm_set_first_row(fastlstm_model *m, int64_t first_row) { FL_ENTER(); return _fl_py_first_row(FL_ID(m), first_row); }
