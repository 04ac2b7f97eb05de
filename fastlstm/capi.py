"""Build libfastlstm.so, the C ABI, with cffi's embedding mode; print compiler flags.

    python -m fastlstm.capi build [--out DIR]        # DIR/libfastlstm.so and DIR/fastlstm.h
    python -m fastlstm.capi --cflags --libs [--dir DIR]

Design (see ../shared/CAPI_NOTES.md): every exported function is a thin C wrapper that
(1) starts the embedded interpreter once (pthread_once), with PyConfig.executable set to the
Python of the environment the library was built in, so that it finds its packages without
PYTHONPATH/PYTHONHOME, even under `env -i`; (2) checks a "ready" flag that only the end of
the Python initialisation sets, so a failed start returns FASTLSTM_ERROR_INIT instead of the
0 that cffi returns from a function without a Python body; (3) calls the implementation in
fastlstm/_capi_impl.py (declared extern "Python", not exported). The header capi/fastlstm.h is
the specification; its struct and constants are fed to cffi from the file itself.
"""
import argparse
import os
import re
import shutil
import sys
import sysconfig
import tempfile

HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "capi", "fastlstm.h")
DEFAULT_DIR = os.path.join("build", "capi")

# Implementations in Python (fastlstm/_capi_impl.py); handles travel as int64 ids.
_EXTERN = """
extern "Python" int _fl_py_create(const fastlstm_config *, int64_t *);
extern "Python" int _fl_py_load(const char *, int64_t *);
extern "Python" void _fl_py_free(int64_t);
extern "Python" int _fl_py_train(int64_t, const float *, const int64_t *, const float *, const int32_t *,
                                 int64_t, int64_t, double *, int);
extern "Python" int _fl_py_apply(int64_t);
extern "Python" int _fl_py_predict(int64_t, const float *, const int64_t *, int64_t, int64_t, float *, int64_t);
extern "Python" int _fl_py_step(int64_t, const float *, int64_t, float *, int64_t);
extern "Python" int _fl_py_reset(int64_t, int64_t);
extern "Python" int _fl_py_save(int64_t, const char *);
extern "Python" int _fl_py_count(int64_t, int64_t *);
extern "Python" int _fl_py_copy(int64_t, float *, int64_t, int, int);
void _fl_set_ready(void);
void _fl_set_error(const char *);
"""

_C_SOURCE = r"""
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "fastlstm.h"

static pthread_once_t fl_once = PTHREAD_ONCE_INIT;
static volatile int fl_ready = 0;
static __thread char fl_error[4096];

void _fl_set_ready(void) { fl_ready = 1; }
void _fl_set_error(const char *msg) { snprintf(fl_error, sizeof fl_error, "%s", msg); }

static int cffi_start_python(void);
static int _fl_py_create(const fastlstm_config *, int64_t *);
static int _fl_py_load(const char *, int64_t *);
static void _fl_py_free(int64_t);
static int _fl_py_train(int64_t, const float *, const int64_t *, const float *, const int32_t *,
                        int64_t, int64_t, double *, int);
static int _fl_py_apply(int64_t);
static int _fl_py_predict(int64_t, const float *, const int64_t *, int64_t, int64_t, float *, int64_t);
static int _fl_py_step(int64_t, const float *, int64_t, float *, int64_t);
static int _fl_py_reset(int64_t, int64_t);
static int _fl_py_save(int64_t, const char *);
static int _fl_py_count(int64_t, int64_t *);
static int _fl_py_copy(int64_t, float *, int64_t, int, int);

/* Start the interpreter of the environment this library was built in (FL_PYTHON), unless
 * the host process already runs one, then cffi's own initialisation and our init code. */
static void fl_start(void) {
    if (!Py_IsInitialized()) {
        PyConfig config;
        PyConfig_InitPythonConfig(&config);
        config.install_signal_handlers = 0;          /* the host owns SIGINT */
        PyStatus st = PyConfig_SetBytesString(&config, &config.executable, FL_PYTHON);
        if (!PyStatus_Exception(st))
            st = Py_InitializeFromConfig(&config);
        PyConfig_Clear(&config);
        if (PyStatus_Exception(st)) {
            fprintf(stderr, "fastlstm: cannot start Python %s: %s\n", FL_PYTHON,
                    st.err_msg ? st.err_msg : "unknown error");
            return;
        }
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

void fastlstm_config_init(fastlstm_config *cfg) {
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->input_size = cfg->hidden_size = cfg->output_size = cfg->num_layers = 1;
    cfg->cell = FASTLSTM_CELL_LSTM;
    cfg->loss = FASTLSTM_LOSS_MSE;
    cfg->output = FASTLSTM_OUTPUT_LAST;
    cfg->optimizer = FASTLSTM_OPTIMIZER_ADAM;
    cfg->learning_rate = 1e-3;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->forget_bias = 1.0;
}

int fastlstm_create(const fastlstm_config *cfg, fastlstm_model **out) {
    FL_ENTER();
    int64_t id = 0;
    int rc = _fl_py_create(cfg, out ? &id : NULL);
    if (rc == FASTLSTM_OK) *out = (fastlstm_model *)(uintptr_t)id;
    return rc;
}

int fastlstm_load(const char *path, fastlstm_model **out) {
    FL_ENTER();
    int64_t id = 0;
    int rc = _fl_py_load(path, out ? &id : NULL);
    if (rc == FASTLSTM_OK) *out = (fastlstm_model *)(uintptr_t)id;
    return rc;
}

void fastlstm_free(fastlstm_model *model) {
    if (model == NULL || fl_enter() != FASTLSTM_OK) return;
    _fl_py_free(FL_ID(model));
}

int fastlstm_train_step(fastlstm_model *m, const float *x, const int64_t *lengths, const float *targets,
                        const int32_t *labels, int64_t T, int64_t B, double *loss) {
    FL_ENTER();
    return _fl_py_train(FL_ID(m), x, lengths, targets, labels, T, B, loss, 1);
}

int fastlstm_compute_gradients(fastlstm_model *m, const float *x, const int64_t *lengths, const float *targets,
                               const int32_t *labels, int64_t T, int64_t B, double *loss) {
    FL_ENTER();
    return _fl_py_train(FL_ID(m), x, lengths, targets, labels, T, B, loss, 0);
}

int fastlstm_apply_update(fastlstm_model *m) { FL_ENTER(); return _fl_py_apply(FL_ID(m)); }

int fastlstm_predict(fastlstm_model *m, const float *x, const int64_t *lengths, int64_t T, int64_t B,
                     float *out, int64_t out_len) {
    FL_ENTER();
    return _fl_py_predict(FL_ID(m), x, lengths, T, B, out, out_len);
}

int fastlstm_step(fastlstm_model *m, const float *x, int64_t B, float *out, int64_t out_len) {
    FL_ENTER();
    return _fl_py_step(FL_ID(m), x, B, out, out_len);
}

int fastlstm_reset_state(fastlstm_model *m, int64_t B) { FL_ENTER(); return _fl_py_reset(FL_ID(m), B); }
int fastlstm_save(fastlstm_model *m, const char *path) { FL_ENTER(); return _fl_py_save(FL_ID(m), path); }
int fastlstm_param_count(fastlstm_model *m, int64_t *n) { FL_ENTER(); return _fl_py_count(FL_ID(m), n); }
int fastlstm_get_params(fastlstm_model *m, float *out, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), out, n, 0, 0); }
int fastlstm_set_params(fastlstm_model *m, const float *in, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), (float *)in, n, 0, 1); }
int fastlstm_get_grads(fastlstm_model *m, float *out, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), out, n, 1, 0); }
int fastlstm_set_grads(fastlstm_model *m, const float *in, int64_t n) { FL_ENTER(); return _fl_py_copy(FL_ID(m), (float *)in, n, 1, 1); }
"""

_INIT_CODE = """
from _fastlstm_capi import ffi, lib
import fastlstm._capi_impl
fastlstm._capi_impl.register(ffi, lib)
lib._fl_set_ready()
"""


def _header_declarations():
    """The header's integer #defines and its config struct, in the form cffi's cdef takes."""
    text = open(HEADER).read()
    defines = [line for line in text.splitlines()
               if re.match(r"#define FASTLSTM_[A-Z0-9_]+\s+-?\d+\s*(/\*.*)?$", line)]
    struct = re.search(r"typedef struct fastlstm_config \{.*?\} fastlstm_config;", text, re.S).group(0)
    struct = re.sub(r"/\*.*?\*/", "", struct)
    return "\n".join(re.sub(r"/\*.*", "", d) for d in defines) + "\n" + struct + "\n"


def build(out_dir=DEFAULT_DIR, verbose=False):
    """Compile libfastlstm.so into out_dir and copy the header beside it; returns its path."""
    import cffi

    from . import __version__
    if not os.path.exists(HEADER):
        raise RuntimeError(f"{HEADER} not found: build the C ABI from a source checkout of fastlstm")
    ffi = cffi.FFI()
    ffi.cdef(_header_declarations() + _EXTERN)
    ffi.embedding_api("")
    libdir = sysconfig.get_config_var("LIBDIR")
    ffi.set_source("_fastlstm_capi", _C_SOURCE, include_dirs=[os.path.dirname(HEADER)],
                   define_macros=[("FL_PYTHON", '"%s"' % sys.executable), ("FL_VERSION", '"%s"' % __version__)],
                   extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
                   extra_link_args=[f"-Wl,-rpath,{libdir}"], libraries=["pthread"])
    ffi.embedding_init_code(_INIT_CODE)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        lib = ffi.compile(tmpdir=tmp, target="libfastlstm.so", verbose=verbose)
        target = os.path.join(os.path.abspath(out_dir), "libfastlstm.so")
        shutil.copyfile(lib, target + ".tmp")
        os.replace(target + ".tmp", target)
    shutil.copyfile(HEADER, os.path.join(out_dir, "fastlstm.h"))
    return target


def flags(out_dir, cflags, libs):
    d = os.path.abspath(out_dir)
    parts = ([f"-I{d}"] if cflags else []) + ([f"-L{d}", "-lfastlstm", f"-Wl,-rpath,{d}"] if libs else [])
    return " ".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastlstm.capi", description=__doc__.split("\n")[0])
    p.add_argument("command", nargs="?", choices=["build"], help="build the library")
    p.add_argument("--out", "--dir", dest="dir", default=DEFAULT_DIR, help="where the library is (default build/capi)")
    p.add_argument("--cflags", action="store_true", help="print the compiler flags")
    p.add_argument("--libs", action="store_true", help="print the linker flags")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.command == "build":
        print(build(args.dir, args.verbose))
    if args.cflags or args.libs:
        print(flags(args.dir, args.cflags, args.libs))
    if not (args.command or args.cflags or args.libs):
        p.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
