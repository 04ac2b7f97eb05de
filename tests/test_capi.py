"""The C ABI: build libfastlstm.so and the examples with gcc, run them as a C user would."""
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
import fastlstm.tasks
from fastlstm import capi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "capi", "fastlstm.h")) as _f:
    HEADER_TEXT = _f.read()
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("capi")
    capi.build(str(d))
    return d


def _compile(lib, src, out):
    flags = capi.flags(str(lib), True, True).split()
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(out), src, *flags, "-lm", "-lpthread"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.fixture(scope="module")
def check(lib):
    return _compile(lib, os.path.join(ROOT, "tests", "c", "capi_check.c"), lib / "capi_check")


def _version_number():
    """FASTLSTM_VERSION_NUMBER of this fastlstm: MAJOR*10000 + MINOR*100 + PATCH."""
    major, minor, patch = map(int, fastlstm.__version__.split("."))
    return major * 10000 + minor * 100 + patch


def _run(args, timeout=300, env=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_build_puts_library_and_header_side_by_side(lib):
    assert (lib / "libfastlstm.so").exists() and (lib / "fastlstm.h").exists()
    for optimize in ([], ["-OO"]):          # -OO drops docstrings: the help text used to be __doc__'s line
        r = _run([sys.executable, *optimize, "-m", "fastlstm.capi", "--cflags", "--libs", "--dir", str(lib)])
        assert r.stdout.split() == [f"-I{lib}", f"-L{lib}", "-lfastlstm", f"-Wl,-rpath,{lib}"], r.stderr


def _documented_statuses():
    """{function: {status name}} from the "Returns ..." line of each function's comment in
    the header (INIT and INTERNAL, which every function may return, are tested apart)."""
    text = HEADER_TEXT
    out = {}
    for m in re.finditer(r"Returns ([A-Z_, ]+)\.(?:(?!FASTLSTM_API).)*?FASTLSTM_API int (fastlstm_\w+)\(", text, re.S):
        out[m.group(2)] = {s.strip() for s in m.group(1).split(",")}
    return out


CODES = {"OK": 0, "NULL_POINTER": 1, "INVALID_ARGUMENT": 2, "NON_FINITE": 3, "INVALID_HANDLE": 4, "IO": 5,
         "BAD_CHECKPOINT": 6, "BUFFER_TOO_SMALL": 7}


def test_every_documented_status_of_every_function_fires_and_leaves_the_model_as_it_was(check, tmp_path):
    fastlstm.Model(3, 8, 2, dtype=np.float64, seed=0).save(tmp_path / "float64.ckpt")
    r = _run([check, "errors", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    rows = [line.split(maxsplit=3) for line in r.stdout.splitlines() if line.startswith("fastlstm_")]
    got = {(fn, case): (int(rc), rest[0] if rest else "") for fn, case, rc, *rest in rows}
    want = {("fastlstm_create", "null_cfg"): 1, ("fastlstm_create", "null_out"): 1,
            ("fastlstm_create", "zero_hidden"): 2, ("fastlstm_create", "bad_loss"): 2,
            ("fastlstm_create", "xent_one_class"): 2,
            ("fastlstm_create", "bad_lr"): 2, ("fastlstm_create", "nan_lr"): 2, ("fastlstm_create", "nan_eps"): 2,
            ("fastlstm_create", "huge_lr"): 2, ("fastlstm_create", "tiny_eps"): 2,
            ("fastlstm_create", "nan_momentum"): 2, ("fastlstm_create", "nan_forget_bias"): 2,
            ("fastlstm_create", "negative_weight_decay"): 2, ("fastlstm_create", "nan_weight_decay"): 2,
            ("fastlstm_create", "adamw_decay_too_big"): 2,
            ("fastlstm_create", "huge_forget_bias"): 2,
            ("fastlstm_create", "nan_clip"): 2, ("fastlstm_create", "negative_clip"): 2,
            ("fastlstm_create", "huge_layers"): 2, ("fastlstm_create", "beyond_memory"): 2,
            ("fastlstm_create", "bad_bidirectional"): 2, ("fastlstm_create", "dropout_1"): 2,
            ("fastlstm_create", "nan_dropout"): 2, ("fastlstm_step", "bidirectional"): 2,
            ("fastlstm_create", "proj_not_below_hidden"): 2, ("fastlstm_create", "negative_proj"): 2,
            ("fastlstm_create", "proj_with_gru"): 2, ("fastlstm_create", "negative_vocab"): 2,
            ("fastlstm_create", "unknown_cell"): 2,
            ("fastlstm_train_step", "ids_model"): 2, ("fastlstm_predict", "ids_model"): 2,
            ("fastlstm_step", "ids_model"): 2, ("fastlstm_train_step_ids", "float_model"): 2,
            ("fastlstm_train_step_ids", "null_ids"): 1, ("fastlstm_train_step_ids", "null_handle"): 4,
            ("fastlstm_train_step_ids", "id_out_of_range"): 2, ("fastlstm_train_step_ids", "inf_target"): 3,
            ("fastlstm_compute_gradients_ids", "negative_id"): 2, ("fastlstm_compute_gradients_ids", "inf_target"): 3,
            ("fastlstm_compute_gradients_ids", "null_ids"): 1, ("fastlstm_compute_gradients_ids", "null_handle"): 4,
            ("fastlstm_predict_ids", "id_out_of_range"): 2, ("fastlstm_predict_ids", "null_out"): 1,
            ("fastlstm_predict_ids", "small_buffer"): 7, ("fastlstm_predict_ids", "null_handle"): 4,
            ("fastlstm_step_ids", "id_out_of_range"): 2, ("fastlstm_step_ids", "null_ids"): 1,
            ("fastlstm_step_ids", "small_buffer"): 7, ("fastlstm_step_ids", "null_handle"): 4,
            ("fastlstm_train_step", "null_x"): 1, ("fastlstm_train_step", "null_targets"): 1,
            ("fastlstm_train_step", "zero_T"): 2, ("fastlstm_train_step", "negative_B"): 2,
            ("fastlstm_train_step", "overflow"): 2, ("fastlstm_train_step", "bad_lengths"): 2,
            **{(f"fastlstm_{fn}", "beyond_memory"): 2 for fn in ("train_step", "compute_gradients", "predict", "step",
                                                                 "train_step_ids", "predict_ids", "step_ids")},
            ("fastlstm_train_step", "nan_x"): 3, ("fastlstm_train_step", "inf_target"): 3,
            ("fastlstm_train_step", "overflowing_update"): 3, ("fastlstm_train_step", "null_handle"): 4,
            ("fastlstm_train_step", "foreign_handle"): 4, ("fastlstm_train_step", "freed_handle"): 4,
            ("fastlstm_compute_gradients", "null_x"): 1, ("fastlstm_compute_gradients", "zero_B"): 2,
            ("fastlstm_compute_gradients", "inf_x"): 3, ("fastlstm_compute_gradients", "null_handle"): 4,
            ("fastlstm_apply_update", "null_handle"): 4, ("fastlstm_apply_update", "overflowing_update"): 3,
            ("fastlstm_predict", "small_buffer"): 7, ("fastlstm_predict", "null_out"): 1,
            ("fastlstm_predict", "zero_T"): 2, ("fastlstm_predict", "nan_x"): 3, ("fastlstm_predict", "null_handle"): 4,
            ("fastlstm_step", "zero_B"): 2, ("fastlstm_step", "null_x"): 1, ("fastlstm_step", "small_buffer"): 7,
            ("fastlstm_step", "nan_x"): 3, ("fastlstm_step", "null_handle"): 4,
            ("fastlstm_step", "overflowing_state"): 3, ("fastlstm_step_ids", "overflowing_state"): 3,
            ("fastlstm_reset_state", "zero_B"): 2, ("fastlstm_reset_state", "null_handle"): 4,
            ("fastlstm_param_count", "null_n"): 1, ("fastlstm_param_count", "null_handle"): 4,
            ("fastlstm_load", "missing"): 5, ("fastlstm_load", "garbage"): 6, ("fastlstm_load", "null_path"): 1,
            ("fastlstm_load", "float64"): 2, ("fastlstm_save", "unwritable"): 5, ("fastlstm_save", "null_path"): 1,
            ("fastlstm_save", "null_handle"): 4, ("fastlstm_save", "latin1_path"): 0,
            ("fastlstm_load", "latin1_path"): 0}
    for fn in ("get_params", "get_grads"):
        want.update({(f"fastlstm_{fn}", "wrong_n"): 2, (f"fastlstm_{fn}", "null_out"): 1,
                     (f"fastlstm_{fn}", "null_handle"): 4})
    for fn in ("set_params", "set_grads"):
        want.update({(f"fastlstm_{fn}", "wrong_n"): 2, (f"fastlstm_{fn}", "null_in"): 1,
                     (f"fastlstm_{fn}", "null_handle"): 4})
    want.update({("fastlstm_set_params", "nan_params"): 3, ("fastlstm_set_grads", "nan_grads"): 3})
    want.update({("fastlstm_get_learning_rate", "null_lr"): 1, ("fastlstm_get_learning_rate", "null_handle"): 4,
                 ("fastlstm_set_learning_rate", "null_handle"): 4})
    want.update({("fastlstm_set_learning_rate", case): 2
                 for case in ("nan", "negative", "zero", "inf_in_float32", "zero_in_float32")})
    want.update({("fastlstm_set_first_row", "negative"): 2, ("fastlstm_set_first_row", "huge"): 2,
                 ("fastlstm_set_first_row", "null_handle"): 4})
    want.update({key: 0 for key in got if key[1].startswith("ok")})
    assert set(got) == set(want), set(got) ^ set(want)
    for key, code in want.items():
        assert got[key][0] == code, f"{key}: {got[key]}"
        assert bool(got[key][1]) == (code != 0), f"{key} must carry a message exactly when it fails"
    assert "fastlstm.load(path).astype('float32').save(path32)" in got[("fastlstm_load", "float64")][1]
    assert "cannot stream" in got[("fastlstm_step", "bidirectional")][1]
    for fn in ("fastlstm_step", "fastlstm_step_ids"):         # (the ReLU RNN's h; the state kept: test_model)
        assert "new state would not be finite" in got[(fn, "overflowing_state")][1]
    assert "proj_size must be < hidden_size" in got[("fastlstm_create", "proj_not_below_hidden")][1]
    assert "LSTM only" in got[("fastlstm_create", "proj_with_gru")][1]
    assert "cfg->cell = 4 is not a FASTLSTM_CELL_ constant" in got[("fastlstm_create", "unknown_cell")][1]
    relu = fastlstm.load(tmp_path / "relu.ckpt")             # FASTLSTM_CELL_RNN_RELU: the ReLU RNN
    assert relu.cell == "rnn_relu" and relu.core.nonlinearity == "relu" and relu.steps == 1
    assert "weight_decay must be >= 0" in got[("fastlstm_create", "negative_weight_decay")][1]
    assert "lr·weight_decay" in got[("fastlstm_create", "adamw_decay_too_big")][1]
    for fn in ("train_step", "predict", "step"):
        assert "call the *_ids functions" in got[(f"fastlstm_{fn}", "ids_model")][1]
    assert "functions without _ids" in got[("fastlstm_train_step_ids", "float_model")][1]
    assert "0..6" in got[("fastlstm_train_step_ids", "id_out_of_range")][1]
    documented = _documented_statuses()
    header = HEADER_TEXT
    status_functions = set(re.findall(r"FASTLSTM_API int (fastlstm_\w+)\(", header)) - {"fastlstm_version_number"}
    assert set(documented) == status_functions, status_functions ^ set(documented)
    for fn, statuses in documented.items():
        fired = {name for name, code in CODES.items() if any(k[0] == fn and c == code for k, c in want.items())}
        assert statuses == fired, f"{fn}: the header lists {sorted(statuses)}, the cases fire {sorted(fired)}"
    lines = dict(line.split(maxsplit=1) for line in r.stdout.splitlines() if not line.startswith("fastlstm_"))
    assert lines["unchanged"] == "1" and lines["changed"] == "1" and lines["sgd_unchanged"] == "1"
    assert lines["lr_unchanged"] == "1"
    assert "is inf in float32" in got[("fastlstm_set_learning_rate", "inf_in_float32")][1]
    assert lines["ids_unchanged"] == "1"
    a, b = map(int, lines["handles"].split())
    assert a and b and abs(a - b) > 1 << 32, f"handles {a:#x}, {b:#x} look sequential"
    assert "invalid (freed or foreign) model handle" in r.stdout
    assert f"version {_version_number()} {fastlstm.__version__}" in r.stdout


def test_a_build_that_cannot_compile_or_write_says_why_without_a_traceback(tmp_path):
    """No compiler, a folder that takes no files, or no setuptools: `python -m fastlstm.capi
    build` raised cffi's VerificationError, an OSError or cffi's Exception with a traceback."""
    cmd = [sys.executable, "-m", "fastlstm.capi", "build", "--out"]
    for out, env, said in ((tmp_path / "lib", dict(os.environ, CC="/nonexistent/cc"),
                            "compiling the library failed: CompileError"),
                           ("/proc/fastlstm-lib", None, "cannot write the library into /proc/fastlstm-lib")):
        r = _run([*cmd, str(out)], env=env)
        assert r.returncode == 2 and f"python -m fastlstm.capi: error: {said}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    # Python >= 3.12 has no distutils, and a venv no setuptools (a dependency there): cffi raised a bare Exception
    hide = "import sys; sys.modules['setuptools'] = None; from fastlstm.capi import main; sys.exit(main(sys.argv[1:]))"
    r = _run([sys.executable, "-c", hide, "build", "--out", str(tmp_path / "lib")])
    assert r.returncode == 2 and "error: cffi compiles the library through setuptools, which this Python cannot " \
        "import" in r.stderr and "pip install setuptools" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a copy of the package without its C sources (neither capi/ nor the wheel's _capi_src beside it)
    gone = ("import sys, fastlstm.capi as c; c.C_SOURCE = '/nonexistent/fastlstm_capi.c'; "
            "sys.exit(c.main(sys.argv[1:]))")
    r = _run([sys.executable, "-c", gone, "build", "--out", str(tmp_path / "lib")])
    assert r.returncode == 2 and "error: " in r.stderr and "/nonexistent/fastlstm_capi.c not found: reinstall " \
        "fastlstm, or build from a source checkout" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_installed_wheel_carries_the_sources_the_builder_needs(tmp_path):
    """`pip install .` (not -e) used to leave capi/ behind: the builder then said to use a
    source checkout. The wheel now carries the header and the C source as fastlstm/_capi_src,
    and the builder run from the installed package finds them there."""
    src = tmp_path / "src"                                  # a copy: the build writes build/ beside it
    for part in ("fastlstm", "capi"):
        shutil.copytree(os.path.join(ROOT, part), src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, part), src)
    r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
             timeout=600)
    assert r.returncode == 0, r.stderr
    wheel, = (tmp_path / "dist").glob("fastlstm-*.whl")
    r = _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
              str(wheel)], timeout=600)
    assert r.returncode == 0, r.stderr
    where = "import fastlstm.capi as c; print(c.HEADER); print(c.C_SOURCE)"
    r = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    header, source = r.stdout.split()
    assert header == str(tmp_path / "site" / "fastlstm" / "_capi_src" / "fastlstm.h"), r.stderr
    for path, name in ((header, "fastlstm.h"), (source, "fastlstm_capi.c")):
        with open(path, "rb") as a, open(os.path.join(ROOT, "capi", name), "rb") as b:
            assert a.read() == b.read()


def test_the_header_numbers_the_settings_in_the_order_fastlstm_names_them():
    """capi/fastlstm.h is where the C side's constants are written; the library reads them
    from it (cffi parses the #defines), and they must name fastlstm.choices in order."""
    from fastlstm import choices
    text = HEADER_TEXT
    for kind, names in (("CELL", choices.CELLS), ("LOSS", choices.LOSSES), ("OUTPUT", choices.OUTPUTS),
                        ("OPTIMIZER", choices.OPTIMIZERS)):
        found = sorted((int(v), k.lower()) for k, v in re.findall(rf"#define FASTLSTM_{kind}_(\w+)\s+(\d+)", text))
        assert [name for _, name in found] == list(names) and [v for v, _ in found] == list(range(len(names))), kind


@pytest.mark.parametrize("cut", ["double forget_bias;", "/* from 0.3 */", "/* from 0.4 */", "/* from 0.5 */",
                                 "/* from 0.6 */"])
def test_a_program_built_against_an_older_smaller_config_keeps_working(lib, tmp_path, cut):
    """Headers of older versions whose fastlstm_config ends before `cut` (without forget_bias,
    seed and the rest; 0.2's, without bidirectional and dropout; 0.3's; 0.4's; 0.5's): the library reads only the
    fields that program's struct holds and takes the defaults for the rest; sizes it does not
    know are refused with a message."""
    old = tmp_path / "old"
    old.mkdir()
    header = (lib / "fastlstm.h").read_text().splitlines()
    start = next(i for i, l in enumerate(header) if cut in l)
    end = next(i for i, l in enumerate(header) if l.startswith("} fastlstm_config;"))
    (old / "fastlstm.h").write_text("\n".join(header[:start] + header[end:]) + "\n")
    src = tmp_path / "old.c"
    src.write_text('''#include <stdio.h>
#include <stdlib.h>
#include "fastlstm.h"
int main(void) {
    fastlstm_config c; fastlstm_config_init(&c);
    c.input_size = 3; c.hidden_size = 8; c.output_size = 2;
    fastlstm_model *m = 0; int64_t n = 0;
    int rc = fastlstm_create(&c, &m);
    fastlstm_param_count(m, &n);
    float *p = malloc(sizeof(float) * n);
    fastlstm_get_params(m, p, n);
    printf("%d %u %lld %.9g %.9g\\n", rc, (unsigned)c.struct_size, (long long)n, p[0], p[3]);
    c.struct_size = 13;
    printf("%d %s\\n", fastlstm_create(&c, &m), fastlstm_last_error());
    c.struct_size = (unsigned)sizeof c + 64;
    printf("%d\\n", fastlstm_create(&c, &m));
    return 0;
}
''')
    exe = tmp_path / "old_prog"
    flags = capi.flags(str(lib), False, True).split()
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{old}", "-o", str(exe), str(src), *flags],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = _run([str(exe)]).stdout.splitlines()
    rc, size, n, p0, p3 = out[0].split()
    m = fastlstm.Model(3, 8, 2, seed=0)                       # forget_bias 1 and seed 0: the defaults
    assert rc == "0" and int(size) <= 152 and int(n) == m.params.size   # 0.2's has ≤ 120 bytes, 0.3's 136, 0.4's 144, 0.5's 152, 0.6's 160
    assert np.float32(p0) == m.params[0] and np.float32(p3) == m.params[3]   # %.9g round-trips float32
    assert out[1].startswith("2 ") and "struct_size = 13" in out[1]
    assert out[2] == "2"


@pytest.mark.parametrize("optimizer,wd", [("SGD", 0.05), ("ADAM", 0.05), ("ADAMW", 0.05), ("ADAMW", 0.0)])
def test_weight_decay_and_adamw_from_c_train_as_in_python(lib, tmp_path, optimizer, wd):
    """cfg.weight_decay (0.6) with each optimizer: the C-trained weights equal Python's bit for
    bit, and the checkpoint names the optimizer and its weight decay."""
    src, exe, ckpt = tmp_path / "wd.c", tmp_path / "wd", tmp_path / "wd.ckpt"
    src.write_text(f'''#include <stdio.h>
#include "fastlstm.h"
int main(void) {{
    fastlstm_config c; fastlstm_config_init(&c);
    c.input_size = 2; c.hidden_size = 8; c.output_size = 1; c.seed = 3; c.learning_rate = 0.05;
    c.optimizer = FASTLSTM_OPTIMIZER_{optimizer}; c.weight_decay = {wd}; c.momentum = 0.5;
    fastlstm_model *m = 0; double loss;
    if (fastlstm_create(&c, &m)) {{ puts(fastlstm_last_error()); return 1; }}
    float x[5 * 3 * 2], y[3];
    for (int i = 0; i < 30; i++) x[i] = (float)((i * 7 % 11) / 11.0 - 0.5);
    for (int i = 0; i < 3; i++) y[i] = (float)(i / 3.0);
    for (int s = 0; s < 4; s++) if (fastlstm_train_step(m, x, 0, y, 0, 5, 3, &loss)) return 2;
    return fastlstm_save(m, "{ckpt}") ? 3 : 0;
}}
''')
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{lib}", "-o", str(exe), str(src),
                        *capi.flags(str(lib), False, True).split()], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = _run([str(exe)])
    assert r.returncode == 0, r.stdout + r.stderr
    kind = {"SGD": fastlstm.SGD, "ADAM": fastlstm.Adam, "ADAMW": fastlstm.AdamW}[optimizer]
    opt = kind(lr=0.05, weight_decay=wd, **({"momentum": 0.5} if optimizer == "SGD" else {}))
    m = fastlstm.Model(2, 8, 1, seed=3, optimizer=opt)
    x = (np.arange(30) * 7 % 11 / 11.0 - 0.5).astype(np.float32).reshape(5, 3, 2)
    y = (np.arange(3) / 3.0).astype(np.float32).reshape(3, 1)
    for _ in range(4):
        m.train_step(x, y)
    c = fastlstm.load(ckpt)
    assert type(c.optimizer) is kind and c.optimizer.weight_decay == wd
    assert np.array_equal(c.params, m.params)


def test_a_part_of_a_batch_from_c_draws_the_whole_batchs_dropout_masks(lib, tmp_path):
    """fastlstm_set_first_row (0.9): gradients of rows 4..7 of a batch with first_row = 4
    equal Python's compute_gradients(..., first_row=4) bit for bit, and differ from those
    drawn with the rows counted from 0 (the masks a data-parallel rank drew before)."""
    src, exe = tmp_path / "rows.c", tmp_path / "rows"
    src.write_text('''#include <stdio.h>
#include "fastlstm.h"
int main(void) {
    fastlstm_config c; fastlstm_config_init(&c);
    c.input_size = 2; c.hidden_size = 8; c.output_size = 1; c.num_layers = 2; c.dropout = 0.5; c.seed = 3;
    fastlstm_model *m = 0; double loss; int64_t n;
    if (fastlstm_create(&c, &m) || fastlstm_param_count(m, &n) || n > 2000) return 1;
    float x[5 * 4 * 2], y[4], g[2000];
    for (int i = 0; i < 40; i++) x[i] = (float)((i * 7 % 11) / 11.0 - 0.5);
    for (int i = 0; i < 4; i++) y[i] = (float)(i / 4.0);
    for (int first = 0; first <= 4; first += 4) {
        if (fastlstm_set_first_row(m, first) || fastlstm_compute_gradients(m, x, 0, y, 0, 5, 4, &loss)
            || fastlstm_get_grads(m, g, n)) { puts(fastlstm_last_error()); return 2; }
        fwrite(g, sizeof(float), (size_t)n, stdout);
    }
    return 0;
}
''')
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{lib}", "-o", str(exe), str(src),
                        *capi.flags(str(lib), False, True).split()], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    from_0, from_4 = np.frombuffer(r.stdout, np.float32).reshape(2, -1)
    m = fastlstm.Model(2, 8, 1, 2, dropout=0.5, seed=3)
    x = (np.arange(40) * 7 % 11 / 11.0 - 0.5).astype(np.float32).reshape(5, 4, 2)
    y = (np.arange(4) / 4.0).astype(np.float32).reshape(4, 1)
    m.compute_gradients(x, y, first_row=4)
    assert np.array_equal(from_4, m.grads)
    m.compute_gradients(x, y)
    assert np.array_equal(from_0, m.grads) and not np.array_equal(from_0, from_4)


def test_a_learning_rate_schedule_from_c_trains_as_in_python(lib, tmp_path):
    """fastlstm_set_learning_rate (0.7) between steps, a decay of the caller's own: the
    weights equal Python's with the same rates bit for bit, and the checkpoint keeps the last."""
    src, exe, ckpt = tmp_path / "lr.c", tmp_path / "lr", tmp_path / "lr.ckpt"
    src.write_text(f'''#include <stdio.h>
#include "fastlstm.h"
int main(void) {{
    fastlstm_config c; fastlstm_config_init(&c);
    c.input_size = 2; c.hidden_size = 8; c.output_size = 1; c.seed = 3; c.learning_rate = 0.05;
    fastlstm_model *m = 0; double loss, lr = 0;
    if (fastlstm_create(&c, &m)) {{ puts(fastlstm_last_error()); return 1; }}
    float x[5 * 3 * 2], y[3];
    for (int i = 0; i < 30; i++) x[i] = (float)((i * 7 % 11) / 11.0 - 0.5);
    for (int i = 0; i < 3; i++) y[i] = (float)(i / 3.0);
    for (int s = 0; s < 4; s++) {{
        if (fastlstm_set_learning_rate(m, 0.05 / (1 + s))) return 2;
        if (fastlstm_train_step(m, x, 0, y, 0, 5, 3, &loss)) return 3;
    }}
    if (fastlstm_get_learning_rate(m, &lr) || lr != 0.05 / 4) return 4;
    return fastlstm_save(m, "{ckpt}") ? 5 : 0;
}}
''')
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{lib}", "-o", str(exe), str(src),
                        *capi.flags(str(lib), False, True).split()], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = _run([str(exe)])
    assert r.returncode == 0, r.stdout + r.stderr
    m = fastlstm.Model(2, 8, 1, seed=3, optimizer=fastlstm.Adam(lr=0.05))
    x = (np.arange(30) * 7 % 11 / 11.0 - 0.5).astype(np.float32).reshape(5, 3, 2)
    y = (np.arange(3) / 3.0).astype(np.float32).reshape(3, 1)
    for s in range(4):
        m.optimizer.lr = 0.05 / (1 + s)
        m.train_step(x, y)
    c = fastlstm.load(ckpt)
    assert np.array_equal(c.params, m.params) and c.optimizer.lr == 0.05 / 4 and c.optimizer.t == 4


@pytest.mark.parametrize("V", [0, 11], ids=["floats", "token_ids"])
def test_c_trained_model_matches_python_trained_bitwise(check, tmp_path, V):
    """Training, predict and a streaming step from C equal Python's bit for bit, on float
    inputs and on token ids (an embedding of width D)."""
    T, B, D, O, steps, seed = 7, 6, 3, 2, 5, 11
    rng = np.random.default_rng(0)
    x_of = (lambda: rng.integers(0, V, (T, B))) if V else (lambda: rng.random((T, B, D), np.float32))
    batches = [(x_of(), rng.random((B, O), np.float32)) for _ in range(steps)]
    data = tmp_path / "data.bin"
    with open(data, "wb") as f:
        f.write(struct.pack("7q", T, B, D, O, steps, seed, V))
        for x, y in batches:
            f.write(x.tobytes())
            f.write(y.tobytes())
    r = _run([check, "fromfile", str(data), str(tmp_path / "c.ckpt")])
    assert r.returncode == 0, r.stderr
    out = {k: [float(line.split()[1]) for line in r.stdout.splitlines() if line.startswith(k + " ")]
           for k in ("loss", "predict", "step")}
    m = fastlstm.Model(D, 16, O, 2, optimizer=fastlstm.Adam(lr=1e-2), clip=1.0, seed=seed, vocab_size=V or None)
    py_losses = [m.train_step(x, y) for x, y in batches]
    c = fastlstm.load(tmp_path / "c.ckpt")
    assert c.vocab_size == (V or None)
    assert np.array_equal(c.params, m.params), "C and Python training diverged"
    assert np.allclose(out["loss"], py_losses, rtol=1e-8)
    x = batches[-1][0]
    assert np.array_equal(np.float32(out["predict"]), m.predict(x).ravel())     # %.9g round-trips float32
    assert np.array_equal(np.float32(out["step"]), m.step(x[0]).ravel())


def test_a_batch_first_checkpoint_takes_time_major_x_from_c(check, tmp_path):
    """The header's x is [T][B][D] whatever the checkpoint: a Model made with batch_first in
    Python predicts from C as it does in Python under model.time_major()."""
    T, B, D, O = 5, 3, 4, 2
    m = fastlstm.Model(D, 8, O, batch_first=True, seed=0)
    m.save(tmp_path / "bf.ckpt")
    x = np.random.default_rng(0).standard_normal((T, B, D), dtype=np.float32)
    x.tofile(tmp_path / "x.bin")
    r = _run([check, "predictfile", str(tmp_path / "bf.ckpt"), str(tmp_path / "x.bin"), *map(str, (T, B, D, O))])
    assert r.returncode == 0, r.stderr
    got = np.array([float(line.split()[1]) for line in r.stdout.splitlines()]).reshape(B, O)
    with m.time_major():
        assert np.array_equal(got.astype(np.float32), m.predict(x))


def test_threads_each_with_a_model_run_concurrently(check):
    r = _run([check, "threads", "4"])
    assert r.returncode == 0 and "threads 4 failed 0" in r.stdout, r.stdout + r.stderr


def test_threads_sharing_one_model_take_turns(check):
    """Four threads train one handle together: each call is whole, so the weights equal the
    same number of steps made on one thread (the same batch every step)."""
    r = _run([check, "shared", "4"])
    assert r.returncode == 0 and "shared 4 failed 0 equal 1" in r.stdout, r.stdout + r.stderr


def test_a_long_loop_does_not_grow_memory(check):
    r = _run([check, "leak", "3000"])
    assert r.returncode == 0, r.stderr
    early, late = map(int, r.stdout.split()[1:3])
    assert late - early < 4096, f"resident memory grew from {early} to {late} KiB over 2400 steps"


def test_models_created_and_freed_leave_nothing_behind(check):
    """A set of every handle ever issued (to refuse stale ones) grew by 180 bytes a model:
    2.8 MiB over these 16000, and without bound in a server making a model a request."""
    r = _run([check, "churn", "20000"])
    assert r.returncode == 0, r.stderr
    early, late = map(int, r.stdout.split()[1:3])
    assert late - early < 512, f"resident memory grew from {early} to {late} KiB over 16000 models"


def test_examples_train_and_stream_from_a_python_checkpoint(lib, tmp_path):
    ex = os.path.join(ROOT, "capi", "examples")
    train = _compile(lib, os.path.join(ex, "train_adding.c"), tmp_path / "train_adding")
    stream = _compile(lib, os.path.join(ex, "stream_predict.c"), tmp_path / "stream_predict")
    r = _run([train, "20", "300", str(tmp_path / "c.ckpt")])
    assert r.returncode == 0, r.stderr
    losses = [float(line.split()[-1]) for line in r.stdout.splitlines() if line.startswith("step")]
    assert len(losses) == 3 and losses[-1] < losses[0], r.stdout
    task = fastlstm.tasks.Adding(T=20, test_size=100)
    m = fastlstm.Model(2, 32, 1, optimizer=fastlstm.Adam(lr=1e-2), clip=1.0, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        m.train_step(*task.batch(rng, 32)[:2])
    m.save(tmp_path / "py.ckpt", extra={"task": {"name": "adding", "T": 20}})
    # a clean environment: no venv on PATH, no PYTHONPATH/HOME; the library finds its Python
    r = _run([stream, str(tmp_path / "py.ckpt"), "20"], env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    target, pred = (float(v) for v in r.stdout.splitlines()[-1].split()[1:4:2])
    assert abs(target - pred) < 0.3, r.stdout


def test_the_header_is_strict_c99_and_links_from_cpp(lib, tmp_path):
    """The header's promise: C99 or later, or C++ (its declarations in extern "C")."""
    strict = ["-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{lib}"]
    for src in ("capi/examples/train_adding.c", "capi/examples/stream_predict.c", "tests/c/capi_check.c"):
        r = _run(["gcc", "-std=c99", *strict, "-fsyntax-only", os.path.join(ROOT, src)])
        assert r.returncode == 0, r.stderr
    if shutil.which("g++") is None:
        pytest.fail("needs g++ (the header's C++ promise)")
    src = tmp_path / "host.cpp"
    src.write_text('#include <cstdio>\n#include "fastlstm.h"\n'
                   "int main() {\n"
                   "    fastlstm_config cfg;\n    fastlstm_config_init(&cfg);\n"
                   "    fastlstm_model *m = nullptr;\n    int s = fastlstm_create(&cfg, &m);\n"
                   '    std::printf("%d %d %s\\n", s, fastlstm_version_number(), fastlstm_version_string());\n'
                   "    fastlstm_free(m);\n    return s;\n}\n")
    exe = tmp_path / "host"
    r = _run(["g++", "-std=c++11", *strict, "-Wold-style-cast", "-o", str(exe), str(src),
              *capi.flags(str(lib), True, True).split()])
    assert r.returncode == 0, r.stderr
    r = _run([str(exe)])
    assert r.returncode == 0 and r.stdout.split() == ["0", str(_version_number()), fastlstm.__version__], r.stderr


def test_python_exception_inside_becomes_a_code_not_a_crash(check, tmp_path):
    """A checkpoint whose JSON header is valid but whose content is inconsistent makes the
    Python side raise deep inside; C gets BAD_CHECKPOINT and carries on."""
    m = fastlstm.Model(3, 8, 2, seed=0)
    m.save(tmp_path / "m.ckpt")
    from fastlstm import checkpoint
    header, arrays = checkpoint.read(tmp_path / "m.ckpt")
    header["model"]["hidden_size"] = "eight"
    checkpoint.write(tmp_path / "bad.ckpt", header, arrays)
    src = tmp_path / "load.c"
    src.write_text('#include <stdio.h>\n#include "fastlstm.h"\nint main(int c, char **v) {\n'
                   '  fastlstm_model *m = 0; int rc = fastlstm_load(v[1], &m);\n'
                   '  printf("%d %s\\n", rc, fastlstm_last_error()); return 0; }\n')
    exe = _compile(check.rsplit("/", 1)[0], str(src), tmp_path / "load")
    r = _run([exe, str(tmp_path / "bad.ckpt")])
    assert r.returncode == 0 and r.stdout.startswith("6 "), r.stdout + r.stderr


def test_a_failed_start_makes_every_call_return_init_not_zero(check, tmp_path):
    """If the embedded Python cannot start fastlstm (here: a broken package shadows it on
    PYTHONPATH), cffi would return 0 from every function; the wrappers return INIT instead."""
    broken = tmp_path / "shadow" / "fastlstm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('deliberately broken for the test')\n")
    r = _run([check, "errors", str(tmp_path)], env=dict(os.environ, PYTHONPATH=str(tmp_path / "shadow")))
    # small_model() fails first: create returns INIT (8) and the program says so
    assert r.returncode == 1 and "create:" in r.stderr and "failed to start" in r.stderr, r.stdout + r.stderr
    src = tmp_path / "init.c"
    src.write_text('#include <stdio.h>\n#include "fastlstm.h"\nint main(void) {\n'
                   '  fastlstm_model *m = 0; fastlstm_config c; fastlstm_config_init(&c); int64_t n = 0;\n'
                   '  printf("%d %d %d %d\\n", fastlstm_create(&c, &m), fastlstm_param_count(m, &n),\n'
                   '         fastlstm_load("x", &m), fastlstm_version_number());\n'
                   '  printf("%s\\n", fastlstm_last_error()); return 0; }\n')
    exe = _compile(check.rsplit("/", 1)[0], str(src), tmp_path / "init")
    r = _run([exe], env=dict(os.environ, PYTHONPATH=str(tmp_path / "shadow")))
    first, message = r.stdout.splitlines()[:2]
    assert first == f"8 8 8 {_version_number()}", r.stdout
    assert "failed to start" in message
    r = _run([exe], env=dict(os.environ, NUMBA_DISABLE_JIT="1"))  # pure Python cannot run the kernels' LLVM IR
    first, message = r.stdout.splitlines()[:2]
    assert first == f"8 8 8 {_version_number()}" and "failed to start" in message, r.stdout
    assert "fastlstm's kernels run compiled only, and NUMBA_DISABLE_JIT=1 is set" in r.stderr, r.stderr


SIGINT_HOST = r'''#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "fastlstm.h"
static volatile sig_atomic_t got = 0;
static void on_int(int s) { (void)s; got++; }
int main(int argc, char **argv) {            /* argv[1]: the host's SIGINT before its first call */
    (void)argc;
    signal(SIGINT, !strcmp(argv[1], "ign") ? SIG_IGN : !strcmp(argv[1], "own") ? on_int : SIG_DFL);
    fastlstm_config c; fastlstm_config_init(&c);
    c.input_size = 2; c.hidden_size = 4; c.output_size = 1;
    fastlstm_model *m = 0;
    float x[3 * 2 * 2] = {0.5f, -1, 0.25f, 2, 1, 0, -0.5f, 1, 0, 0.5f, 1, -1}, y[2] = {1, -1};
    double loss = 0;
    if (fastlstm_create(&c, &m) || fastlstm_train_step(m, x, NULL, y, NULL, 3, 2, &loss)) return 3;
    struct sigaction sa; sigaction(SIGINT, NULL, &sa);
    printf("%s\n", sa.sa_handler == SIG_DFL ? "dfl" : sa.sa_handler == SIG_IGN ? "ign"
                   : sa.sa_handler == on_int ? "own" : "another");
    fflush(stdout);
    raise(SIGINT);                            /* Ctrl-C */
    int rc = fastlstm_train_step(m, x, NULL, y, NULL, 3, 2, &loss);
    printf("survived %d %d %s\n", (int)got, rc, fastlstm_last_error());
    return 0;
}
'''


@pytest.mark.parametrize("host", ["dfl", "ign", "own"])
def test_ctrl_c_stays_the_host_programs(lib, tmp_path, host):
    """Python's _signal module, when first imported, puts its own SIGINT handler in place of
    SIG_DFL (whatever the embedding asked), and fastlstm imports it: a C program's Ctrl-C
    then no longer stopped it, and came back as KeyboardInterrupt, an internal error, from
    its next fastlstm call. After fastlstm has started and trained, SIGINT is as the host set
    it: SIG_DFL ends the program, SIG_IGN and the host's own handler leave the next call working."""
    src = tmp_path / "sigint.c"
    src.write_text(SIGINT_HOST)
    exe = _compile(lib, str(src), tmp_path / "sigint")
    r = _run([exe, host], timeout=120)
    if host == "dfl":
        assert r.returncode == -2 and r.stdout == "dfl\n", (r.returncode, r.stdout, r.stderr)
    else:
        assert r.returncode == 0 and r.stdout == f"{host}\nsurvived {int(host == 'own')} 0 \n", r.stdout + r.stderr


LOCALE_HOST = r'''#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastlstm.h"
extern char **environ;
static void show(void) {
    const char *e = getenv("LC_CTYPE");
    printf("%s %s\n", e ? e : "unset", setlocale(LC_CTYPE, NULL));
}
int main(int argc, char **argv) {                /* argv[1]: "own" sets the host's locale first */
    if (argc > 1 && !strcmp(argv[1], "own")) setlocale(LC_ALL, "C.UTF-8");
    show();
    int before = 0;
    while (environ[before]) before++;
    fastlstm_config c; fastlstm_config_init(&c);
    fastlstm_model *m = 0;
    float x[2] = {0.5f, -1}, y[2] = {1, -1};
    double loss = 0;
    if (fastlstm_create(&c, &m) || fastlstm_train_step(m, x, NULL, y, NULL, 1, 2, &loss)) return 3;
    show();
    printf("%d %s\n", fastlstm_load("/nonexistent/caf\xc3\xa9.ckpt", &m), fastlstm_last_error());
    for (char **e = environ; *e; e++) printf("%s;", *e);     /* env -i: all of it is what the library set */
    printf("\n");
    return before;
}
'''


@pytest.mark.parametrize("host", ["plain", "own"])
def test_the_host_programs_locale_and_environment_stay_as_they_were(lib, tmp_path, host):
    """Python started with its default pre-configuration sets the process's LC_CTYPE locale,
    and in the C locale also sets LC_CTYPE=C.UTF-8 in the environment (PEP 538): a C program
    that never chose a locale found both changed after its first fastlstm call, and the
    programs it runs inherited the variable, and OMP_WAIT_POLICY, GOMP_SPINCOUNT and
    OPENBLAS_THREAD_TIMEOUT too. Under `env -i` (the C locale) and with a locale of the
    program's own, the locale stays and the environment gains Numba's settings alone;
    Python inside runs in UTF-8 mode, so messages still name a non-ASCII path in UTF-8."""
    src = tmp_path / "locale.c"
    src.write_text(LOCALE_HOST)
    exe = _compile(lib, str(src), tmp_path / "locale")
    r = subprocess.run(["env", "-i", exe, host], capture_output=True, timeout=120)
    out = r.stdout.decode("utf-8").splitlines()
    assert r.returncode == 0 and len(out) == 4, (r.returncode, r.stdout, r.stderr)   # 0: env -i left no variable
    assert out[0] == out[1] == ("unset C.UTF-8" if host == "own" else "unset C"), out
    assert out[2].startswith("5 ") and "/nonexistent/café.ckpt" in out[2], out[2]
    added = [v.split("=")[0] for v in out[3].split(";") if v]      # OMP_WAIT_POLICY and the like went, too
    assert added and all(name.startswith("NUMBA_") for name in added), added
