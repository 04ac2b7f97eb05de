"""Build libfastlstm.so, the C ABI, with cffi's embedding mode; print compiler flags.

    python -m fastlstm.capi build [--out DIR]        # DIR/libfastlstm.so and DIR/fastlstm.h
    python -m fastlstm.capi --cflags --libs [--dir DIR]

The C side is C: capi/fastlstm.h (the specification) and capi/fastlstm_capi.c (the
exported wrappers, which start the embedded Python and call its implementations; its
opening comment says how and why). This module feeds cffi the header's constants and
struct straight from the file, the wrappers' source, and the prototypes of the Python
implementations (fastlstm/_capi_impl.py) from the one list below.
"""
import argparse
import os
import re
import shutil
import sys
import sysconfig
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
# capi/ of a source checkout, or else its copy that an installed wheel carries (pyproject's package-dir)
_CHECKOUT, _WHEEL = os.path.join(os.path.dirname(_HERE), "capi"), os.path.join(_HERE, "_capi_src")
_SOURCES = next((d for d in (_CHECKOUT, _WHEEL) if os.path.exists(os.path.join(d, "fastlstm.h"))), _CHECKOUT)
HEADER = os.path.join(_SOURCES, "fastlstm.h")
C_SOURCE = os.path.join(_SOURCES, "fastlstm_capi.c")
DEFAULT_DIR = os.path.join("build", "capi")

# The Python implementations (fastlstm/_capi_impl.py) behind the exported C functions, each
# declared once: cffi's cdef gets them as `extern "Python"`, the C source as prototypes.
# Handles travel as int64 ids; inputs as `const void *` with a flag: 1 for token ids
# (int64), 0 for floats.
_IMPLEMENTATIONS = [
    ("int", "_fl_py_create", "const fastlstm_config *, int64_t *"),
    ("int", "_fl_py_load", "const char *, int64_t *"),
    ("void", "_fl_py_free", "int64_t"),
    ("int", "_fl_py_train", "int64_t, const void *, int, const int64_t *, const float *, const int32_t *, "
                            "int64_t, int64_t, double *, int"),
    ("int", "_fl_py_apply", "int64_t"),
    ("int", "_fl_py_predict", "int64_t, const void *, int, const int64_t *, int64_t, int64_t, float *, int64_t"),
    ("int", "_fl_py_step", "int64_t, const void *, int, int64_t, float *, int64_t"),
    ("int", "_fl_py_reset", "int64_t, int64_t"),
    ("int", "_fl_py_save", "int64_t, const char *"),
    ("int", "_fl_py_count", "int64_t, int64_t *"),
    ("int", "_fl_py_copy", "int64_t, float *, int64_t, int, int"),
    ("int", "_fl_py_lr", "int64_t, double *, double, int"),
    ("int", "_fl_py_first_row", "int64_t, int64_t"),
]
# C functions of the source that the Python side calls.
_C_HELPERS = "void _fl_set_ready(void);\nvoid _fl_set_error(const char *);\n"


def _cdef_implementations():
    return "".join(f'extern "Python" {r} {n}({a});\n' for r, n, a in _IMPLEMENTATIONS) + _C_HELPERS


def _c_prototypes():
    return '#include "fastlstm.h"\nstatic int cffi_start_python(void);\n' + "".join(
        f"static {r} {n}({a});\n" for r, n, a in _IMPLEMENTATIONS)


_INIT_CODE = """
from _fastlstm_capi import ffi, lib
import fastlstm._capi_impl
fastlstm._capi_impl.register(ffi, lib)
lib._fl_set_ready()
"""


def _header_declarations():
    """The header's integer #defines and its config struct, in the form cffi's cdef takes."""
    with open(HEADER) as f:
        text = f.read()
    defines = [line for line in text.splitlines()
               if re.match(r"#define FASTLSTM_[A-Z0-9_]+\s+-?\d+\s*(/\*.*)?$", line)]
    struct = re.search(r"typedef struct fastlstm_config \{.*?\} fastlstm_config;", text, re.S).group(0)
    struct = re.sub(r"/\*.*?\*/", "", struct)
    return "\n".join(re.sub(r"/\*.*", "", d) for d in defines) + "\n" + struct + "\n"


def build(out_dir=DEFAULT_DIR, verbose=False):
    """Compile libfastlstm.so into out_dir and copy the header beside it; returns its path."""
    import cffi

    from . import __version__
    if not (os.path.exists(HEADER) and os.path.exists(C_SOURCE)):
        raise RuntimeError(f"{HEADER} or {C_SOURCE} not found: reinstall fastlstm, or build from a source checkout")
    try:
        import setuptools  # noqa: F401  (cffi compiles through it; Python 3.12 dropped distutils)
    except Exception as e:      # ImportError, or a broken install: cffi would raise a bare Exception
        raise RuntimeError(f"cffi compiles the library through setuptools, which this Python cannot import ({e}): "
                           f"pip install setuptools") from None
    ffi = cffi.FFI()
    ffi.cdef(_header_declarations() + _cdef_implementations())
    ffi.embedding_api("")
    libdir = sysconfig.get_config_var("LIBDIR")
    with open(C_SOURCE) as f:
        source = _c_prototypes() + f.read()
    ffi.set_source("_fastlstm_capi", source, include_dirs=[os.path.dirname(HEADER)],
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
    p = argparse.ArgumentParser(prog="python -m fastlstm.capi", description="Build libfastlstm.so, the C ABI, with "
                                "cffi's embedding mode; print compiler flags.")   # not __doc__: python -OO drops it
    p.add_argument("command", nargs="?", choices=["build"], help="build the library")
    p.add_argument("--out", "--dir", dest="dir", default=DEFAULT_DIR, help="where the library is (default build/capi)")
    p.add_argument("--cflags", action="store_true", help="print the compiler flags")
    p.add_argument("--libs", action="store_true", help="print the linker flags")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.command == "build":
        import cffi
        try:
            print(build(args.dir, args.verbose))
        except OSError as e:
            p.error(f"cannot write the library into {args.dir}: {e.strerror} ({e.filename})")
        except RuntimeError as e:                     # no source checkout, no setuptools
            p.error(str(e))
        except cffi.VerificationError as e:          # no compiler, no Python headers: a message, not a traceback
            p.error(f"compiling the library failed: {e}. It needs a C compiler (cc, or $CC) and Python's headers "
                    f"(python3-dev on Debian)")
    if args.cflags or args.libs:
        print(flags(args.dir, args.cflags, args.libs))
    if not (args.command or args.cflags or args.libs):
        p.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
