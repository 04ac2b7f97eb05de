"""The benchmark tools keep working (on tiny shapes; timings are not asserted)."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compare_prints_a_row_per_group():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "compare.py"), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for group in ("| train |", "| infer |", "| train float64 |", "| stream |", "memory tiny",
                  "| train, one process, fastlstm first |", "| train, one process, numpy and torch first |",
                  "| train bidirectional |", "| train 2 layers, dropout 0.2 |", "| text task step",
                  "| call overhead (fastlstm_param_count) |", "| stream step B=1", "| train step",
                  "| row, timed beside its base |", "| GRU infer | tiny |",
                  "| stream, torch.nn.LSTMCell | B=1 (8, 16, 1, 1) |", "| GRU stream, torch.nn.GRUCell | B=1 |",
                  "| stream, a step every 1 ms | B=1", "| stream, a step every 1 ms, torch.nn.LSTMCell | B=1",
                  "| GRU stream, a step every 1 ms | B=1"):
        assert group in r.stdout, r.stdout


def test_compare_takes_a_subset_of_shapes_or_ones_own_and_refuses_unknown_ones():
    compare = os.path.join(ROOT, "benchmarks", "compare.py")
    r = subprocess.run([sys.executable, compare, "--groups", "bi", "--shapes", "small", "--repeats", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "| train bidirectional | small (32, 64, 16, 50) |" in r.stdout and "medium" not in r.stdout, r.stdout
    assert "| train bidirectional | small |" in r.stdout, r.stdout          # beside the unidirectional LSTM
    r = subprocess.run([sys.executable, compare, "--groups", "train", "--shapes", "8x20x4x5", "--repeats", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "| train | 8x20x4x5 (8, 20, 4, 5) |" in r.stdout, r.stdout + r.stderr
    for bad in ("huge", "8x20x4", "8x0x4x5"):
        r = subprocess.run([sys.executable, compare, "--shapes", bad], capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and f"unknown shapes ['{bad}']" in r.stderr, r.stderr


@pytest.mark.parametrize("script, args, said", [
    ("compare.py", ["--groups", "train,nope"], "unknown groups ['nope']: choose from train, infer, "),  # an empty table
    ("compare.py", ["--repeats", "0"], "argument --repeats: takes an integer >= 1, got '0'"),           # a traceback
    ("scaling.py", ["--threads", "1,x"], "argument --threads: takes an integer >= 1, got 'x'"),
    ("variants.py", ["--repeats", "-1"], "argument --repeats: takes an integer >= 1, got '-1'"),
    ("data_prep.py", ["--csv-rows", "125"], "--csv-rows takes at least 126 rows"),                 # a worker's traceback
    ("data_prep.py", ["--text-mb", "nan"], "--text-mb takes a size in MB >= 0"),
    ("mpi_scaling.py", ["--ranks", "0,2"], "--ranks takes an integer >= 1, got '0'"),           # a row for 0 ranks
    ("mpi_scaling.py", ["--steps", "0"], "--steps takes an integer >= 1, got 0")])               # no row at all
def test_a_benchmarks_bad_arguments_are_refused_by_name(script, args, said):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and f"{script}: error: " in r.stderr and said in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == "", r.stdout


def test_pytest_benchmark_suite_runs():
    env = dict(os.environ, FASTLSTM_BENCH_QUICK="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "benchmarks"), "--benchmark-disable"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "12 passed" in r.stdout, r.stdout


def test_profile_step_prints_every_phase():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"), "small"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for phase in ("step", "forward kernel", "input half", "pack W, U", "backward kernel", "δW and δX", "δb", "copies",
                  "the rest", "floor"):
        assert f"  {phase} " in r.stdout, r.stdout
    assert re.search(r"^peak \d+ GFLOP/s .* matmul \d+ GFLOP/s$", r.stdout, re.M), r.stdout
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"), "--infer", "small"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and ", inference\n" in r.stdout, r.stderr
    assert re.search(r"^  backward kernel +0\.000 ms", r.stdout, re.M) and "  floor " in r.stdout, r.stdout
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"), "small", "huge"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "unknown shape huge;" in r.stderr and "small" not in r.stdout, r.stderr


def test_unit_split_gives_the_same_bits_as_the_row_split():
    """The unit-split forward (a design measured, not adopted) computes each z with the same
    tile as recurrent_forward: the same bits, whatever its chunk count, on a batch of 16
    rows and on one (a shape given as DxHxBxT)."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "unit_split.py"), "small", "8x64x1x20"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("  same bits: True") == 2 and "  rows (fastlstm) " in r.stdout, r.stdout
    assert "8x64x1x20 (D, H, B, T) = (8, 64, 1, 20)" in r.stdout, r.stdout
    assert re.search(r"  units, \d+ chunks +\d+\.\d+ ms", r.stdout), r.stdout
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "unit_split.py"), "huge"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "unknown shape huge;" in r.stderr, r.stderr


def test_variants_forces_each_tile_width_and_form_and_marks_the_picked_one():
    """benchmarks/variants.py times the four combinations of tile width and forward form;
    the widths give the same bits within a form, the forms do not (the input half's sums
    are BLAS's in one)."""
    script = os.path.join(ROOT, "benchmarks", "variants.py")
    for flags in ([], ["--infer", "--float64"]):
        r = subprocess.run([sys.executable, script, "--quick", *flags], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        rows = {cells[2].removesuffix(" *"): cells for line in r.stdout.splitlines()
                if line.startswith("| tiny (8, 16, 4, 10) |") for cells in [[c.strip() for c in line.split("|")]]}
        assert sorted(rows) == ["128 B fused", "128 B split", "64 B fused", "64 B split"], r.stdout
        assert sum(cells[2].endswith(" *") for cells in rows.values()) == 1, r.stdout
        for width, other in (("64", "128"), ("128", "64")):
            for form in ("fused", "split"):
                assert rows[f"{width} B {form}"][6] == f"{other} B {form}", r.stdout   # same bits: that width alone
    r = subprocess.run([sys.executable, script, "huge"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "unknown shapes ['huge']" in r.stderr, r.stderr


def test_data_prep_prints_the_step_shares_and_the_text_and_csv_loads():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "data_prep.py"), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for row in ("| adding (T=100", "| series (window 100", "| text (T=100", "Text load: 2 MB file",
                "CSV load: 1 MB file (20,000 rows, a time column and five numbers)"):
        assert row in r.stdout, r.stdout


@pytest.mark.parametrize("load", [[], ["--load"]])
def test_import_order_prints_a_row_per_shape(load):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "import_order.py"), "--quick", *load],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "| tiny (8, 16, 4, 10) |" in r.stdout and ("under load" in r.stdout) == bool(load), r.stdout


def test_scaling_prints_a_row_per_thread_count_and_names_those_left_out():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "scaling.py"), "--shape", "tiny",
                        "--repeats", "1", "--threads", "1,2,100000"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert rows[0].endswith("| 100% | 100% |"), r.stdout
    assert len(rows) == (2 if len(os.sched_getaffinity(0)) >= 2 else 1), r.stdout
    assert "Left out: 100000 threads" in r.stdout, r.stdout
    assert re.search(r"^fastlstm [\w.]+, torch [\w.+]+, NumPy [\w.]+, Numba [\w.]+, Python [\w.]+\.$", r.stdout, re.M), r.stdout


def test_scaling_without_torch_prints_fastlstm_alone(tmp_path):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "scaling.py"), "--shape", "tiny",
                        "--repeats", "1", "--threads", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert "| 1 |" in r.stdout and "| (torch not installed) | – | 100% | – |" in r.stdout, r.stdout


def test_a_benchmark_without_its_peer_says_how_to_install_it(tmp_path):
    """Run without the torch extra, compare.py and import_order.py ended in two
    tracebacks ("RuntimeError: torch worker: exited", CalledProcessError), mpi_scaling.py
    without the mpi one in FileNotFoundError, and `pytest benchmarks` in a conftest's
    ModuleNotFoundError. Each now says which extra to install (the suite skips, saying so).
    The peers are hidden here as a Python without them lacks them: None in sys.modules."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = sys.modules['mpi4py'] = None\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for script, said in (("compare.py --quick", "this Python lacks torch: pip install -e '.[torch]'"),
                         ("import_order.py --quick", "this Python lacks torch: pip install -e '.[torch]'"),
                         ("mpi_scaling.py --steps 1", "this Python lacks mpi4py: pip install -e '.[mpi]'")):
        name, *args = script.split()
        r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args], capture_output=True,
                           text=True, timeout=300, env=env)
        assert r.returncode == 1 and said in r.stderr and "Traceback" not in r.stderr, (script, r.stderr)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "benchmarks", "test_bench.py")], capture_output=True, text=True,
                       timeout=300, env=env)
    assert "1 skipped" in r.stdout and "pip install -e '.[torch]'" in r.stdout, r.stdout    # status 5: none ran
