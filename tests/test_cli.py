"""The command line as a user runs it: train, resume, Ctrl-C, sample, bad options."""
import argparse
import csv
import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastlstm
from fastlstm.tasks import Text


def _run(*args, timeout=300, **popen):
    return subprocess.run([sys.executable, "-m", "fastlstm", *args], capture_output=True, text=True,
                          timeout=timeout, **popen)


def _read_until(p, marker, timeout=300):
    """What p printed on stderr up to and including `marker` (or until it exits)."""
    seen, deadline = "", time.time() + timeout
    while marker not in seen and p.poll() is None and time.time() < deadline:
        seen += p.stderr.read(1)
    return seen


def _resume_matches_a_run_never_stopped(args, out, ref, end=None):
    """Continue the run at `out` with --resume, and run it afresh at `ref`, with the same
    args (to --steps `end` if given): both end on the same step with the same bits."""
    steps = ["--steps", str(end)] if end is not None else []
    for run in (["--out", str(out), "--resume"], ["--out", str(ref)]):
        r = _run("train", *args, "--quiet", *steps, *run)
        assert r.returncode == 0, r.stderr
    m, r = fastlstm.load(out), fastlstm.load(ref)
    assert m.steps == r.steps and np.array_equal(m.params, r.params)
    return m


SMALL = ["--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "10", "--quiet", "--full"]


def history(checkpoint):
    """The rows of the metrics log beside a run's checkpoint (NAME.csv): step an int, the rest
    floats, a metric not taken left out."""
    with open(str(checkpoint)[:-len(".ckpt")] + ".csv", newline="") as f:
        return [{k: int(x) if k == "step" else float(x) for k, x in row.items() if x} for row in csv.DictReader(f)]


def test_train_writes_a_checkpoint_and_reports_the_figure_of_merit(tmp_path):
    out = tmp_path / "a.ckpt"
    r = _run("train", "--task", "adding", "--steps", "20", "--out", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    assert "test_mse" in r.stdout and "baseline 0.1667" in r.stdout and "20 steps" in r.stdout
    m = fastlstm.load(out)
    assert m.steps == 20 and m.extra["task"] == {"name": "adding", "T": 12}
    assert [h["step"] for h in history(out)] == [10, 20] and m.extra["evaluations"] == 2


def test_a_built_in_task_stops_once_solved_and_full_runs_every_step(tmp_path, capsys):
    """The README's promise, which no test held (every other run here passes --full): a run
    of a built-in task ends at the evaluation that finds it solved, and --full runs on to
    --steps, the same run until then."""
    from fastlstm import cli
    args = ["train", "--T", "10", "--hidden", "16", "--lr", "0.01", "--eval-every", "50", "--quiet"]
    assert cli.main([*args, "--steps", "3000", "--out", str(tmp_path / "a.ckpt")]) == 0
    assert "; solved; checkpoint" in capsys.readouterr().out
    m = fastlstm.load(tmp_path / "a.ckpt")
    mse = [row["test_mse"] for row in history(tmp_path / "a.ckpt")]
    assert m.steps == 50 * len(mse) < 3000 and mse[-1] < 0.01 <= min(mse[:-1]), mse
    assert cli.main([*args, "--steps", str(m.steps + 100), "--full", "--out", str(tmp_path / "f.ckpt")]) == 0
    assert "; solved; checkpoint" in capsys.readouterr().out
    full = fastlstm.load(tmp_path / "f.ckpt")
    assert full.steps == m.steps + 100 and [row["test_mse"] for row in history(tmp_path / "f.ckpt")][:len(mse)] == mse


def test_every_argument_of_every_command_says_what_it_is_in_help():
    """`fastlstm predict --help` listed `checkpoint` and `--data PATH` with no words, as did
    sample's --length, --temperature and --seed, and train's --optimizer, --dtype and --seed."""
    from fastlstm import cli
    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [(name, a.option_strings[-1] if a.option_strings else a.dest)
            for name, p in sub.choices.items() for a in p._actions if not a.help]
    assert bare == []


def test_version_is_written_once_and_every_place_that_shows_it_agrees():
    """`fastlstm --version`, the installed package's metadata (pyproject reads
    fastlstm.__version__) and the C header's FASTLSTM_VERSION_* give one version."""
    import importlib.metadata
    import re
    from pathlib import Path
    r = _run("--version")
    assert r.returncode == 0 and r.stdout == f"fastlstm {fastlstm.__version__}\n"
    assert importlib.metadata.version("fastlstm") == fastlstm.__version__
    header = (Path(__file__).parents[1] / "capi" / "fastlstm.h").read_text()
    parts = [re.search(rf"#define FASTLSTM_VERSION_{k} (\d+)", header).group(1) for k in ("MAJOR", "MINOR", "PATCH")]
    assert ".".join(parts) == fastlstm.__version__


@pytest.mark.parametrize("layers", [[], ["--layers", "2", "--dropout", "0.3", "--bidirectional"], ["--cell", "gru"],
                                    ["--layers", "2", "--proj", "4"], ["--cell", "rnn_relu"]])
def test_resume_continues_bitwise_as_if_never_stopped(tmp_path, layers):
    """Also with dropout, whose masks a resumed run draws again from the step count, and
    for a GRU (--cell gru), an LSTM with projections (--proj) and a ReLU RNN."""
    a, b, args = tmp_path / "a.ckpt", tmp_path / "b.ckpt", [*layers, *SMALL]
    assert _run("train", "--steps", "40", "--out", str(a), *args).returncode == 0
    assert _run("train", "--steps", "20", "--out", str(b), *args).returncode == 0
    r = _run("train", "--steps", "40", "--out", str(b), "--resume", *args)
    assert r.returncode == 0, r.stderr
    assert ("ReLU RNN" in r.stdout + r.stderr) == ("rnn_relu" in layers), r.stdout + r.stderr
    ma, mb = fastlstm.load(a), fastlstm.load(b)
    assert mb.steps == 40 and np.array_equal(ma.params, mb.params)
    assert mb.core.bidirectional == ("--bidirectional" in layers) and mb.core.dropout == (0.3 if "--dropout" in layers
                                                                                           else 0)
    assert mb.cell == (layers[1] if "--cell" in layers else "lstm") and mb.core.proj_size == (4 if "--proj" in layers else 0)
    assert all(np.array_equal(ma.optimizer.state[k], mb.optimizer.state[k]) for k in ma.optimizer.state)


@pytest.mark.parametrize("task", ["digits", "text"])
def test_every_built_in_task_resumes_bitwise(tmp_path, task):
    """`--task digits --resume` failed with "Digits.__init__() got an unexpected keyword
    argument 'T'": a run records its task's T, and the digits task (8 rows of 8) takes none."""
    if task == "digits":
        pytest.importorskip("sklearn")
    args = ["--task", task, "--hidden", "8", "--batch", "8", "--eval-every", "5", "--full",
            *(["--T", "12"] if task == "text" else [])]
    out = tmp_path / "a.ckpt"
    assert _run("train", *args, "--steps", "5", "--quiet", "--out", str(out)).returncode == 0
    assert fastlstm.load(out).extra["task"] == {"name": task, "T": 12 if task == "text" else 8}
    assert _resume_matches_a_run_never_stopped(args, out, tmp_path / "ref.ckpt", end=10).steps == 10
    if task == "digits":                 # a record of another T (the digits are 8 rows) is named, not run
        m = fastlstm.load(out)
        for T in (9, True):
            m.save(out, extra={**m.extra, "task": {"name": "digits", "T": T}})
            r = _run("train", "--task", "digits", "--resume", "--out", str(out), "--steps", "12", "--quiet")
            assert r.returncode == 2 and r.stderr == (f"fastlstm: error: {out}: its record of the task is unusable "
                                                      f"(T = {T!r}, and the digits task has 8 steps)\n"), r.stderr


def test_every_option_at_the_edge_of_its_range_is_taken(tmp_path, capsys):
    """The ranges' own ends (a count's minimum, a fraction's 0, --proj one below --hidden,
    --layers at its most, a file name of the most bytes a name may have) run: the refusals'
    tests alone would pass with every bound one too tight."""
    from fastlstm import cli
    from fastlstm._validate import MAX_LAYERS
    edges = ["--steps", "1", "--batch", "1", "--eval-every", "1", "--patience", "1", "--warmup", "0", "--seed", "0",
             "--T", "2", "--quiet"]
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")                  # the longest of the run's files: NAME.best.ckpt
    runs = {"e" * (name_max - len(".best.ckpt")) + ".ckpt":
            ["--hidden", "2", "--proj", "1", "--layers", "2", "--dropout", "0", "--clip", "0", "--weight-decay", "0",
             "--optimizer", "sgd", "--momentum", "0"],
            "deep.ckpt": ["--hidden", "1", "--layers", str(MAX_LAYERS), "--proj", "0"],
            "text.ckpt": ["--task", "text", "--hidden", "1", "--embed", "1"]}
    (tmp_path / "the.txt").write_text("The " * 50)                  # the default prime's own characters, no more
    (tmp_path / "a.txt").write_text("a" * 50)                       # a vocabulary of one character, windows of 1
    runs.update({"the.ckpt": ["--data", str(tmp_path / "the.txt")],
                 "a.ckpt": ["--T", "1", "--data", str(tmp_path / "a.txt")]})
    for name, how in runs.items():
        assert cli.main(["train", *edges, *how, "--out", str(tmp_path / name)]) == 0, name
        assert fastlstm.load(tmp_path / name).steps == 1
    assert fastlstm.load(tmp_path / "deep.ckpt").config()["num_layers"] == MAX_LAYERS
    for name, how, said in (("text.ckpt", ["--length", "0", "--seed", "0", "--prime", "a"], "a\n"),
                            ("the.ckpt", ["--length", "0"], "The \n"),
                            ("a.ckpt", ["--length", "3", "--prime", "a"], "aaaa\n")):
        capsys.readouterr()
        assert cli.main(["sample", str(tmp_path / name), *how]) == 0
        assert capsys.readouterr().out == said, name


def test_resume_refuses_options_that_would_change_the_run(tmp_path):
    """--resume used to ignore a typed --hidden, --lr, --T…: the run went on as it was, saying
    nothing. Options typed again with the run's values (the same command plus --resume) pass."""
    out = tmp_path / "r.ckpt"
    args = ["--out", str(out), *SMALL, "--seed", "3", "--clip", "0"]
    assert _run("train", "--steps", "2", *args).returncode == 0
    assert _run("train", "--steps", "3", "--resume", *args).returncode == 0
    kept = out.read_bytes()
    for typed, said in ((["--hidden", "16"], "--hidden 16 (the run's: 8)"),
                        (["--lr", "0.5", "--cell", "gru"], "--cell gru (the run's: lstm), --lr 0.5 (the run's: 0.01)"),
                        (["--T", "20", "--seed", "4"], "--T 20 (the run's: 12), --seed 4 (the run's: 3)"),
                        (["--batch", "4"], "--batch 4 (the run's: 8)"),
                        (["--weight-decay", "0.1"], "--weight-decay 0.1 (the run's: 0.0)")):
        r = _run("train", "--steps", "5", "--resume", "--out", str(out), *typed)
        assert r.returncode == 2 and f"these options differ from it: {said}." in r.stderr, r.stderr
    # options that do not apply to the run are said so, as for a new run ("--window 3 (the run's: 50)"
    # named the parser's default; "--momentum 0.5 (the run's: 0.9)" an Adam run's unused momentum)
    for typed, said in ((["--window", "3"], "--window applies to --data series only; this run is --task adding"),
                        (["--momentum", "0.5"], "--momentum applies to --optimizer sgd only; this run's optimizer is "
                                                "adam"),
                        (["--proj", "2", "--cell", "gru"], "--proj applies to --cell lstm only (PyTorch's proj_size); "
                                                           "this run's cell is gru"),
                        (["--dropout", "0.2"], "--dropout applies between layers (to the outputs of every layer but "
                                               "the last): it needs --layers 2 or more, got --dropout 0.2 with one")):
        r = _run("train", "--steps", "5", "--resume", "--out", str(out), *typed)
        assert r.returncode == 2 and r.stderr.startswith(f"fastlstm: error: {said}"), r.stderr
    # a setting typed against the run's, where the run has dropout and a projection: the setting
    # differs, rather than the run's own dropout or projection being refused
    deep = tmp_path / "deep.ckpt"
    assert _run("train", "--steps", "2", "--layers", "2", "--dropout", "0.3", "--proj", "4", "--out", str(deep),
                *SMALL).returncode == 0
    for typed, said in ((["--layers", "1"], "--layers 1 (the run's: 2)"), (["--cell", "gru"], "--cell gru (the run's: "
                                                                                             "lstm)")):
        r = _run("train", "--steps", "5", "--resume", "--out", str(deep), *typed)
        assert r.returncode == 2 and f"these options differ from it: {said}." in r.stderr, r.stderr
    assert out.read_bytes() == kept
    m = fastlstm.load(out)                                   # a checkpoint from before the record: its model
    m.extra.pop("options")
    m.save(out, extra=m.extra)
    r = _run("train", "--steps", "5", "--resume", "--out", str(out), "--hidden", "16", "--lr", "0.5")
    assert r.returncode == 2 and "differ from it: --hidden 16 (the run's: 8)." in r.stderr, r.stderr
    r = _run("train", "--steps", "5", "--resume", "--out", str(out), "--weight-decay", "0.1")
    assert r.returncode == 2 and "--weight-decay 0.1 (the run's: 0.0)" in r.stderr, r.stderr   # from its optimizer


def test_the_same_command_resumes_a_run_whose_batch_was_cut_to_the_data(tmp_path):
    """--batch 8 on 7 training sequences runs batch 7. The run recorded 7, and the same
    command with --resume was refused ("--batch 8 (the run's: 7)"); it records what was
    asked now, and another --batch is still refused."""
    data, out = tmp_path / "few.npz", tmp_path / "few.ckpt"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((9, 5, 2)), y=rng.integers(0, 2, 9))
    args = ["train", "--data", str(data), "--batch", "8", "--hidden", "4", "--out", str(out), "--quiet",
            "--eval-every", "5"]
    r = _run(*args, "--steps", "2")
    assert r.returncode == 0 and "batch 7, 1 step an epoch, 2 steps," in r.stdout, r.stdout + r.stderr
    r = _run(*args, "--steps", "3", "--resume")
    assert r.returncode == 0 and fastlstm.load(out).steps == 3, r.stderr
    assert "fastlstm: 1 step in " in r.stdout, r.stdout                      # it said "1 steps an epoch", "1 steps in"
    # the evaluation at the old end (step 2) stays in the history (docs/guide.md, Resume)
    assert [h["step"] for h in history(out)] == [2, 3]
    r = _run(*args[:4], "7", *args[5:], "--steps", "4", "--resume")
    assert r.returncode == 2 and "--batch 7 (the run's: 8)" in r.stderr, r.stderr


def _header_bytes(checkpoint):
    with np.load(checkpoint) as z:
        return z["__fastlstm__"].size


def test_an_evaluation_costs_the_same_at_the_first_and_the_last(tmp_path):
    """Each evaluation wrote the whole history twice: into the metrics log, rewritten, and
    into the checkpoint's header, so a run of short epochs (one evaluation each, by default)
    slowed with every one (20000 steps of 10-step epochs: 47 s against 2.8 for 2000). Now
    the log gains a row and the checkpoint counts them: its header is as long after 40
    evaluations as after 4. A row the checkpoint does not count (the process died between
    the two writes) and a line half written are cut off by --resume, which then ends with
    the log of a run that never stopped (its seconds going on from the checkpoint's); a log
    removed since is said, and goes on."""
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((50, 5, 2)), y=rng.integers(0, 2, 50))
    args = ["train", "--data", str(data), "--batch", "8", "--hidden", "4", "--eval-every", "1", "--quiet"]
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    for steps, out in ((4, a), (40, b)):
        assert _run(*args, "--steps", str(steps), "--out", str(out)).returncode == 0
        assert [h["step"] for h in history(out)] == list(range(1, steps + 1))
        assert fastlstm.load(out).extra["evaluations"] == steps
    assert _header_bytes(b) - _header_bytes(a) < 100, (_header_bytes(a), _header_bytes(b))
    assert _header_bytes(tmp_path / "b.best.ckpt") - _header_bytes(tmp_path / "a.best.ckpt") < 100

    log = tmp_path / "a.csv"
    with open(log, "a") as f:
        f.write("5,1.0,0.1,0.5,0.002,0.5,0.5,0.5\n6,1.2")
    r = _run(*args, "--steps", "40", "--out", str(a), "--resume")
    assert r.returncode == 0 and "note" not in r.stdout, r.stdout + r.stderr
    assert np.array_equal(fastlstm.load(a).params, fastlstm.load(b).params)
    no_seconds = lambda rows: [{k: x for k, x in h.items() if k != "seconds"} for h in rows]   # noqa: E731
    assert no_seconds(history(a)) == no_seconds(history(b))
    seconds = [h["seconds"] for h in history(a)]             # the run's training time, across the resume
    assert seconds == sorted(seconds) and fastlstm.load(a).extra["seconds"] >= seconds[-1], seconds
    os.remove(log)
    r = _run(*args, "--steps", "42", "--out", str(a), "--resume")
    assert r.returncode == 0 and f"fastlstm: note: {log} holds 0 of the run's 40 evaluations" in r.stdout, r.stdout
    assert [h["step"] for h in history(a)] == [41, 42] and fastlstm.load(a).extra["evaluations"] == 2


def test_the_metrics_log_takes_a_metric_that_comes_late_and_cuts_back_to_whole_rows(tmp_path):
    """training.MetricsLog: a row with a metric the header lacks (a seasonal score that was
    not finite at first) rewrites the log with it, earlier rows left empty there; resume(n)
    keeps the header and n whole rows; a new run's first write replaces an earlier log."""
    from fastlstm.training import MetricsLog
    path = tmp_path / "m.csv"
    path.write_text("step,old\n1,2\n")
    log = MetricsLog(str(path))
    log.append({"step": 1, "a": 0.5})
    log.append({"step": 2, "a": 0.25})
    log.append({"step": 3, "a": 0.125, "b": 7.0})
    log.append({"step": 4, "b": 1e-300})
    assert path.read_text() == "step,a,b\n1,0.5,\n2,0.25,\n3,0.125,7.0\n4,,1e-300\n" and log.rows == 4
    with open(path, "a") as f:
        f.write("5,0.1")                                   # a line a crash cut short
    again = MetricsLog(str(path))
    assert again.resume(3) == 3 and again.names == ["step", "a", "b"]
    assert path.read_text() == "step,a,b\n1,0.5,\n2,0.25,\n3,0.125,7.0\n"
    assert again.resume(9) == 3                            # fewer than the checkpoint counts: said by train


def test_resume_moves_the_end_by_epochs_as_by_steps(tmp_path):
    """`--epochs 2`, then the same command with `--resume --epochs 4`, ends where a run of
    4 epochs does, bit for bit (it was refused: "--epochs 4 (the run's: 2)"), and records
    the new end, so that the same command resumes it again. A built-in task counts steps."""
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((50, 5, 2)), y=rng.integers(0, 2, 50))     # 40 to train: 5 steps an epoch
    args = ["train", "--data", str(data), "--batch", "8", "--hidden", "4", "--quiet"]
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    for run in (["--epochs", "2", "--out", str(a)], ["--epochs", "4", "--out", str(a), "--resume"],
                ["--epochs", "4", "--out", str(b)], ["--epochs", "4", "--out", str(a), "--resume"]):
        r = _run(*args, *run)
        assert r.returncode == 0, r.stderr
    ma, mb = fastlstm.load(a), fastlstm.load(b)
    assert ma.steps == mb.steps == 20 and np.array_equal(ma.params, mb.params)
    assert ma.extra["options"]["epochs"] == 4 and history(a) == [
        dict(h, seconds=history(a)[i]["seconds"]) for i, h in enumerate(history(b))]
    r = _run(*args, "--epochs", "5", "--steps", "22", "--out", str(a), "--resume")    # whichever comes first
    assert r.returncode == 0 and fastlstm.load(a).steps == 22, r.stderr
    task = tmp_path / "t.ckpt"
    assert _run("train", "--out", str(task), *SMALL, "--steps", "2").returncode == 0
    r = _run("train", "--out", str(task), "--epochs", "3", "--resume")
    assert r.returncode == 2 and "--epochs applies to --data only; this run is --task adding" in r.stderr


def test_weight_decay_and_adamw_from_the_command_line(tmp_path):
    """--optimizer adamw takes PyTorch's default weight decay (0.01), --weight-decay sets it
    for any optimizer, the checkpoint's optimizer carries it and the run's record names it."""
    for typed, kind, wd in (([], fastlstm.Adam, 0.0), (["--optimizer", "adamw"], fastlstm.AdamW, 0.01),
                            (["--optimizer", "sgd", "--weight-decay", "0.001"], fastlstm.SGD, 0.001)):
        out = tmp_path / f"{len(typed)}.ckpt"
        r = _run("train", "--steps", "3", "--out", str(out), *SMALL, *typed)
        assert r.returncode == 0, r.stderr
        m = fastlstm.load(out)
        assert type(m.optimizer) is kind and m.optimizer.weight_decay == wd == m.extra["options"]["weight_decay"]
    for typed, said in ((["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0, got -1.0"),
                        (["--optimizer", "adamw", "--lr", "0.5", "--weight-decay", "2"], "which must be < 1")):
        r = _run("train", "--steps", "3", "--out", str(tmp_path / "bad.ckpt"), *SMALL, *typed)
        assert r.returncode == 2 and said in r.stderr and not (tmp_path / "bad.ckpt").exists(), r.stderr


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGUSR1, 138),
                                        (signal.SIGUSR2, 140)])
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig, status):
    """SIGTERM (a scheduler's, or `kill`'s) is a Ctrl-C with status 143: it ended the run
    at once, without a checkpoint of the steps since the last evaluation. So are SIGUSR1
    and SIGUSR2, a scheduler's warning before its time limit (SLURM's --signal, Grid
    Engine's -notify), whose default also ended the run with nothing saved."""
    out = tmp_path / "i.ckpt"
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", "--steps", "1000000", "--out", str(out),
                          "--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "1000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Interrupt only once steps are being made (the progress bar on stderr shows loss=),
        # however long Numba's first compilation takes on a busy machine.
        seen = _read_until(p, "loss=")
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)
        stderr = seen + stderr
    finally:
        p.kill()
    assert p.returncode == status, stderr
    assert "interrupted at step" in stdout and "--resume" in stdout
    assert "Traceback" not in stderr
    assert fastlstm.load(out).steps > 0


def test_the_cpu_time_limits_warning_stops_the_run_with_its_checkpoint(tmp_path):
    """`ulimit -t` (and Grid Engine's s_cpu, LSF's CPU limit): at the soft limit the kernel
    sends SIGXCPU, whose default ended the run with a core dump and nothing saved, and
    again each CPU second after. The first stops the run after the step under way, with its
    checkpoint and status 152; the repeats are not taken for a second Ctrl-C; --resume
    continues bitwise. The limit is lowered once the run trains (prlimit), whatever its
    start-up cost in CPU time."""
    import resource
    args = ["--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "50", "--full"]
    out, ref = tmp_path / "x.ckpt", tmp_path / "ref.ckpt"
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args, "--steps", "1000000", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = _read_until(p, "loss=")
        with open(f"/proc/{p.pid}/stat") as f:
            utime, stime = map(int, f.read().rsplit(")", 1)[1].split()[11:13])
        used = (utime + stime) / os.sysconf("SC_CLK_TCK")
        resource.prlimit(p.pid, resource.RLIMIT_CPU, (int(used) + 2, int(used) + 120))
        stdout, stderr = p.communicate(timeout=120)
        stderr = seen + stderr
    finally:
        p.kill()
    assert p.returncode == 152 and "stopping after this step (SIGXCPU: the CPU time limit)" in stderr, stderr
    steps = fastlstm.load(out).steps
    assert steps > 0 and f"interrupted at step {steps}; checkpoint saved" in stdout, stdout
    _resume_matches_a_run_never_stopped(args, out, ref, end=steps + 50 - steps % 50)


def test_the_other_commands_name_standard_output_when_it_cannot_be_written(tmp_path):
    """`fastlstm predict --out - > file` (or sample, carousel) on a full disk said
    'error: [Errno 28] No space left on device', naming nothing; now it names standard
    output (status 2, no traceback)."""
    text, ckpt = tmp_path / "t.txt", tmp_path / "t.ckpt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert _run("train", "--data", str(text), "--steps", "2", "--hidden", "8", "--quiet", "--out",
                str(ckpt)).returncode == 0
    for command in (["predict", str(ckpt), "--data", str(text), "--out", "-"], ["sample", str(ckpt), "--length", "50"],
                    ["carousel", "--T", "8", "--hidden", "4", "--batch", "2"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "fastlstm", *command], stdout=full, stderr=subprocess.PIPE,
                               text=True, timeout=300)
        assert r.returncode == 2 and r.stderr == ("fastlstm: error: cannot write standard output (No space left on "
                                                  "device)\n"), (command, r.stderr)


def test_a_signal_inherited_as_ignored_stays_ignored_but_sigint():
    """nohup ignores SIGHUP, and a parent may ignore SIGTERM or SIGUSR1: its choice stands
    (SIGTERM was handled even then). SIGINT is handled whatever it was, as before."""
    from fastlstm.cli import _Interrupt
    saved = {s: signal.getsignal(s) for s in _Interrupt.SIGNALS}
    try:
        for s in _Interrupt.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        assert _Interrupt.handled() == [signal.SIGINT]
        for s in _Interrupt.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        assert _Interrupt.handled() == list(_Interrupt.SIGNALS)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_ctrl_c_at_random_moments_never_breaks_bitwise_resume(tmp_path):
    """SIGINT at 12 seeded random moments, three of them during start-up (imports, task,
    model, first compilation; 0.1 to 0.2 s, once Python's own start-up, about 0.05 s here,
    has run fastlstm): each run exits 130 without a traceback, either with a
    checkpoint from which --resume ends bitwise equal to the uninterrupted run (weights,
    optimizer state, steps, evaluation history), or before training with a message and no
    file."""
    args = ["--steps", "3000", "--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "500", "--full",
            "--quiet"]
    # a short run first compiles every kernel (a fresh clone's cache is cold), so that the
    # reference's wall time is what each interrupted run takes
    assert _run("train", *args[2:], "--steps", "2", "--out", str(tmp_path / "warm.ckpt")).returncode == 0
    walls = []
    for name in ("ref", "again"):       # the quicker of two: one slowed by a busy machine drew moments
        t0 = time.perf_counter()         # past the end of the runs that followed (5 of 12 finished)
        r = _run("train", *args, "--out", str(tmp_path / f"{name}.ckpt"))
        walls.append(time.perf_counter() - t0)
        assert r.returncode == 0, r.stderr
    wall = min(walls)
    ref = fastlstm.load(tmp_path / "ref.ckpt")
    rng = np.random.default_rng(14)
    # start-up: before the loop, which starts at about 0.25 s on a warm cache here
    moments = list(rng.uniform(0.1, 0.2, 3)) + list(rng.uniform(0.4, 0.8 * wall, 9))
    outcomes = []
    for k, moment in enumerate(moments):
        out = tmp_path / f"run{k}.ckpt"
        p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args, "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(moment)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
        if p.returncode == 0:                    # it finished before the signal came
            outcomes.append("finished")
            continue
        assert p.returncode == 130, (moment, p.returncode, stderr)
        assert "Traceback" not in stderr, (moment, stderr)
        if not out.exists():
            assert "interrupted; no checkpoint was written" in stderr, (moment, stderr)
            outcomes.append("no file")
            continue
        assert "interrupted at step" in stdout, (moment, stdout, stderr)
        r = _run("train", *args, "--out", str(out), "--resume")
        assert r.returncode == 0, r.stderr
        m = fastlstm.load(out)
        assert m.steps == ref.steps and m.optimizer.t == ref.optimizer.t
        assert np.array_equal(m.params, ref.params), f"interrupted at {moment:.2f} s: resume not bitwise"
        assert all(np.array_equal(m.optimizer.state[k], ref.optimizer.state[k]) for k in ref.optimizer.state)
        assert [h["step"] for h in history(out)] == [h["step"] for h in history(tmp_path / "ref.ckpt")]
        assert [h["test_mse"] for h in history(out)] == [h["test_mse"] for h in history(tmp_path / "ref.ckpt")]
        outcomes.append("resumed")
    assert outcomes.count("resumed") + outcomes.count("no file") >= 8, outcomes
    assert "no file" in outcomes and "resumed" in outcomes, outcomes


def test_ctrl_c_while_predict_writes_its_file_leaves_no_temporary(tmp_path):
    """A Ctrl-C outside a run's loop ends the process at once (os._exit, status 130): a
    `predict --out` under way left its hidden temporary (.pred.csv.fastlstm-PID-….tmp) beside
    the file it was writing. The handler now removes what is being written."""
    rng = np.random.default_rng(0)
    data = tmp_path / "every.npz"
    np.savez(data, x=rng.standard_normal((20000, 30, 2)).astype(np.float32),
             y=rng.standard_normal((20000, 30)).astype(np.float32))
    ckpt = tmp_path / "every.ckpt"
    assert _run("train", "--data", str(data), "--output", "every", "--steps", "1", "--hidden", "4", "--quiet",
                "--out", str(ckpt)).returncode == 0
    out = tmp_path / "pred.csv"                  # 600,000 rows: about a second of writing
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "predict", str(ckpt), "--data", str(data), "--out",
                          str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)) and p.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.strip() == "fastlstm: interrupted", err
    assert sorted(os.listdir(tmp_path)) == ["every.best.ckpt", "every.ckpt", "every.csv", "every.npz"]


# Steps of a run that a signal must reach mid-run: 1500 took 0.55 s here, and the progress bar's
# first loss= came at step 471, so a reader slowed by the run's spinning threads sent its signal
# after the last step (status 0, seen once); 6000 leave it two seconds.
LONG = 6000


def test_sigterm_resumes_bitwise_and_before_training_writes_nothing(tmp_path):
    args = ["--steps", str(LONG), "--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "500", "--full"]
    assert _run("train", *args, "--quiet", "--out", str(tmp_path / "ref.ckpt")).returncode == 0
    out = tmp_path / "t.ckpt"
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args, "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _read_until(p, "loss=")
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 143 and "stopping after this step (SIGTERM)" in stderr, stderr
    steps = fastlstm.load(out).steps
    assert 0 < steps < LONG and f"interrupted at step {steps}" in stdout
    assert _run("train", *args, "--quiet", "--out", str(out), "--resume").returncode == 0
    ref, m = fastlstm.load(tmp_path / "ref.ckpt"), fastlstm.load(out)
    assert m.steps == ref.steps == LONG and np.array_equal(m.params, ref.params)
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args, "--out", str(tmp_path / "early.ckpt")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.15)                                                 # in start-up: imports, task, model
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in stderr, stderr
    assert "interrupted (SIGTERM); no checkpoint was written" in stderr or "interrupted at step" in stdout, stderr
    assert not (tmp_path / "early.lock").exists()


def test_sighup_saves_and_resumes_bitwise_unless_nohup_ignores_it(tmp_path):
    """A closed terminal or a dropped ssh session sends SIGHUP, whose default ended the run
    at once, losing the steps since its last checkpoint. It is a Ctrl-C now (status 129).
    Under `nohup`, which starts the process with SIGHUP ignored, it stays ignored."""
    args = ["--steps", str(LONG), "--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "500", "--full"]
    out, ref = tmp_path / "h.ckpt", tmp_path / "ref.ckpt"
    assert _run("train", *args, "--quiet", "--out", str(ref)).returncode == 0

    def started(out, ignore=False):
        p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args, "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignore else None)
        _read_until(p, "loss=")
        p.send_signal(signal.SIGHUP)
        try:
            return p, p.communicate(timeout=300)
        finally:
            p.kill()
    p, (stdout, stderr) = started(out)
    assert p.returncode == 129 and "stopping after this step (SIGHUP: the terminal went away)" in stderr, stderr
    steps = fastlstm.load(out).steps
    assert 0 < steps < LONG and f"interrupted at step {steps}" in stdout
    assert _run("train", *args, "--quiet", "--out", str(out), "--resume").returncode == 0
    assert np.array_equal(fastlstm.load(out).params, fastlstm.load(ref).params)
    p, (stdout, stderr) = started(tmp_path / "nohup.ckpt", ignore=True)
    assert p.returncode == 0 and fastlstm.load(tmp_path / "nohup.ckpt").steps == LONG, stderr
    assert np.array_equal(fastlstm.load(tmp_path / "nohup.ckpt").params, fastlstm.load(ref).params)


@pytest.mark.parametrize("pipe,unbuffered", [("stdout", False), ("stdout", True), ("stderr", False)])
def test_a_reader_that_goes_away_stops_the_run_as_ctrl_c_does(tmp_path, pipe, unbuffered):
    """`fastlstm train | head -1` (or `2>&1 | head`): the first write after the reader went
    away raised BrokenPipeError, which main() took for a `predict | head`: the run ended
    between an evaluation and its checkpoint, with status 0 and nothing said. Now the run
    stops after the step under way, writes its checkpoint, says so on the other stream
    and exits with 141 (128 + SIGPIPE); --resume continues it bitwise. Buffered (a pipe's
    default), the evaluations' lines waited in Python's buffer: nothing reached a `| tee`
    for 8 KB, and a run whose reader had gone trained on to its end and stopped with 141
    and not a word; unbuffered (PYTHONUNBUFFERED=1, as in many containers) it stopped."""
    args = ["--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "50"]
    out = tmp_path / "p.ckpt"
    quiet = ["--quiet"] if pipe == "stdout" else []              # stderr: the progress bar is the writer
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ({"PYTHONUNBUFFERED": "1"} if unbuffered else {})
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args, *quiet, "--steps", "1000000", "--out",
                          str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        reader, other = (p.stdout, p.stderr) if pipe == "stdout" else (p.stderr, p.stdout)
        # the run is under way; its reader leaves, after the first line (`head -1`: unbuffered, as
        # under PYTHONUNBUFFERED=1, print writes a line's newline apart, and a reader gone before
        # it stops the run before its first step) or the progress bar's first frame
        assert reader.readline() if pipe == "stdout" else reader.read(1)
        reader.close()
        said = other.read()
        p.wait(timeout=300)
    finally:
        p.kill()
        other.close()
    assert p.returncode == 141, said
    steps = fastlstm.load(out).steps
    assert steps > 0 and f"the reader of its output went away at step {steps}; checkpoint saved" in said, said
    assert "Traceback" not in said
    end = steps + 50 - steps % 50
    assert _resume_matches_a_run_never_stopped(args, out, tmp_path / "ref.ckpt", end).steps == end


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_that_cannot_be_written_stops_the_run_with_its_checkpoint_and_says_why(tmp_path, stream):
    """`fastlstm train > train.log` on a disk that fills up (here /dev/full): the first line
    that could not be written ended the run with 'error: [Errno 28] No space left on device',
    naming nothing, and no checkpoint. Now the run stops after the step under way, as for a
    reader gone, writes its checkpoint, says why on the other stream and exits with 2;
    --resume continues it bitwise."""
    args = ["--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "10", "--steps", "20"]
    out, ref = tmp_path / "f.ckpt", tmp_path / "ref.ckpt"
    other = "stdout" if stream == "stderr" else "stderr"
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "fastlstm", "train", *args, "--out", str(out)], text=True,
                           timeout=300, **{stream: full, other: subprocess.PIPE})
    said = r.stderr if stream == "stdout" else r.stdout
    name = {"stdout": "standard output", "stderr": "standard error"}[stream]
    assert r.returncode == 2, said
    assert said.strip().endswith(f"fastlstm: error: cannot write {name} (No space left on device): stopped at step "
                                 f"0; checkpoint saved to {out} (continue with --resume)"), said
    assert "Traceback" not in said and fastlstm.load(out).steps == 0
    _resume_matches_a_run_never_stopped(args, out, ref)


def test_a_run_started_with_its_output_closed_trains_and_the_others_say_why_they_cannot(tmp_path):
    """`fastlstm train ... 2>&-` (or `>&-`): Python has no sys.stderr (sys.stdout), and the
    run ended at its progress bar with status 1. A run needs no reader: it trains and
    writes its files. predict and sample, whose output is the point, say so (status 2;
    predict said 'argument 1 must have a "write" method')."""
    out, text = tmp_path / "c.ckpt", tmp_path / "c.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)

    def closed(fd, *args):
        return subprocess.run([sys.executable, "-m", "fastlstm", *args], capture_output=fd == 1, text=True,
                              timeout=300, pass_fds=(), preexec_fn=lambda: os.close(fd))
    for fd in (1, 2):
        r = closed(fd, "train", "--data", str(text), "--steps", "3", "--T", "8", "--hidden", "8", "--out", str(out),
                   "--overwrite")
        assert r.returncode == 0 and fastlstm.load(out).steps == 3, r.stderr
    r = closed(1, "sample", str(out), "--length", "5")
    assert r.returncode == 2 and "standard output is closed (the command ran with >&-): the sample" in r.stderr
    r = closed(1, "predict", str(out), "--data", str(text))
    assert r.returncode == 2 and "the predictions would go there; give --out FILE" in r.stderr, r.stderr


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    """Steps of ~0.3 s: a second SIGINT, sent once the first one's message is out, lands
    inside the step the first one let finish; the run stops there (at the next return
    from a kernel), exit 130, and the checkpoint of the last evaluation is still whole
    (it loads and resumes)."""
    out = tmp_path / "s.ckpt"
    args = ["--steps", "1000000", "--T", "200", "--hidden", "512", "--batch", "64", "--eval-every", "2",
            "--quiet", "--out", str(out)]
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not out.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        # once the handler has run: two signals inside one kernel call are one
        seen = _read_until(p, "again to stop at once", timeout=120)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
        stderr = seen + stderr
    finally:
        p.kill()
    assert p.returncode == 130 and "Traceback" not in stderr, stderr
    assert "stopping after this step" in stderr and "interrupted; the checkpoint" in stderr, stderr
    kept = int(stderr.split("(step ")[1].split(")")[0])
    assert fastlstm.load(out).steps == kept > 0
    r = _run("train", *[a if a != "1000000" else str(kept + 1) for a in args], "--resume")
    assert r.returncode == 0 and fastlstm.load(out).steps == kept + 1, r.stderr


def test_sample_generates_text_from_a_text_checkpoint(tmp_path):
    out = tmp_path / "t.ckpt"
    r = _run("train", "--task", "text", "--steps", "20", "--T", "16", "--hidden", "16", "--batch", "4",
             "--eval-every", "20", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "test_bpc" in r.stdout
    r = _run("sample", str(out), "--length", "50", "--prime", "def ")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def ") and len(r.stdout.rstrip("\n")) >= 50
    r = _run("sample", str(out), "--prime", "def " + "".join(map(chr, range(0x4E00, 0x4E00 + 30))))
    assert r.returncode == 2 and r.stderr == ("fastlstm: error: --prime has characters the model's vocabulary lacks: "
                                              "'一', '丁', '丂', '七', '丄', '丅', '丆', '万', '丈', '三', '上', '下', "
                                              "… and 18 more\n"), r.stderr      # it listed every one
    greedy = [_run("sample", str(out), "--length", "30", "--temperature", "1e-300", "--seed", s) for s in "12"]
    assert all(g.returncode == 0 for g in greedy), greedy[0].stderr        # was "Probabilities contain NaN"
    assert greedy[0].stdout == greedy[1].stdout and len(greedy[0].stdout) > 30   # the argmax at every step
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "sample", str(out), "--length", "100000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert len(p.stdout.read(100)) == 100                       # sampling
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 143 and stderr.strip() == "fastlstm: interrupted (SIGTERM)", stderr   # no checkpoint to speak of


def test_bad_options_and_files_get_a_message_not_a_traceback(tmp_path):
    r = _run("train", "--resume", "--out", str(tmp_path / "missing.ckpt"))
    assert r.returncode == 2 and "fastlstm: error" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    r = _run("sample", str(tmp_path / "bad.ckpt"))
    assert r.returncode == 2 and "not a fastlstm checkpoint (not a zip archive)" in r.stderr
    r = _run("train", "--hidden", "0", "--steps", "1", "--out", str(tmp_path / "z.ckpt"))
    assert r.returncode == 2 and "--hidden must be >= 1, got 0" in r.stderr       # the option, as typed
    r = _run("train", "--task", "nope")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_every_command_makes_the_folder_it_writes_into(tmp_path):
    """As `train --out` and `carousel --plot` do; `predict --out`, `plot --out` and `export`
    stopped at a missing folder ("[Errno 2] cannot write the plot in ...")."""
    pytest.importorskip("onnx")
    pytest.importorskip("matplotlib")
    text, ckpt = tmp_path / "t.txt", tmp_path / "runs" / "t.ckpt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert _run("train", "--data", str(text), "--steps", "2", "--hidden", "8", "--quiet", "--out",
                str(ckpt)).returncode == 0
    for argv, written in ((("predict", str(ckpt), "--data", str(text), "--out"), "a/p.csv"),
                          (("plot", str(tmp_path / "runs" / "t.csv"), "--out"), "b/c/p.png"),
                          (("export", str(ckpt)), "d/t.onnx")):
        r = _run(*argv, str(tmp_path / written))
        assert r.returncode == 0 and (tmp_path / written).stat().st_size > 0, r.stderr


def test_every_cli_error_is_a_fastlstm_error_line_with_status_2(tmp_path):
    adding = tmp_path / "a.ckpt"
    assert _run("train", "--steps", "2", "--out", str(adding), *SMALL).returncode == 0
    plain = tmp_path / "plain.ckpt"
    fastlstm.Model(2, 4, 1).save(plain)
    bare_log = tmp_path / "bare.csv"
    bare_log.write_text("step,epoch\n1,0.5\n")
    (tmp_path / "nostep.csv").write_text("epoch,loss\n1,0.5\n")
    (tmp_path / "norows.csv").write_text("step,train_loss\n")
    (tmp_path / "typo.csv").write_text("step,train_loss,lr\n1,0.5,0.01\n\n2,0.4O,0.01\n")
    (tmp_path / "long.csv").write_text("step,train_loss\n1,0.5\n2,0.4,9\n")
    (tmp_path / "semi.csv").write_text("day;temp\n1;2,5\n")
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    cases = [
        # a series without its target: the file's columns, to choose from (and the separator they look split at)
        (("train", "--data", str(tmp_path / "a.csv")), "--data with a CSV series needs --target COLUMN, the column "
         "to forecast; the file's columns: step, seconds, train_loss, lr, test_mse, baseline"),
        (("train", "--data", str(tmp_path / "semi.csv")), "the file's columns: day;temp; the header looks "
         "';'-separated, and the cells were split at ',': pass --sep ';'"),
        (("sample", str(adding)), "is not a checkpoint of text"),
        (("sample", str(adding), "--temperature", "0"), "--temperature must be"),
        (("sample", str(adding), "--temperature", "nan"), "--temperature must be"),
        # real-valued options: said as the counts are, before --out's state (they came after "exists")
        *((("train", "--out", str(adding), *typed), said) for typed, said in (
            (("--lr", "-1"), "--lr must be a finite number > 0, got -1.0"),
            (("--lr", "inf"), "--lr must be a finite number > 0, got inf"),
            (("--lr", "0"), "--lr must be a finite number > 0, got 0.0"),
            (("--val-fraction", "0"), "--val-fraction must be in (0, 1), got 0.0"),
            (("--val-fraction", "1"), "--val-fraction must be in (0, 1), got 1.0"),
            (("--optimizer", "sgd", "--momentum", "1"), "--momentum must be in [0, 1), got 1.0"),
            (("--clip", "nan"), "--clip must be a finite number >= 0 (0: no clipping), got nan"),
            (("--dropout", "1", "--layers", "2"), "--dropout must be in [0, 1), got 1.0"),
            (("--optimizer", "sgd", "--momentum", "-0.5"), "--momentum must be in [0, 1), got -0.5"),
            (("--weight-decay", "-1"), "--weight-decay must be a finite number >= 0, got -1.0"))),
        (("train", "--task", "digits", "--resume", "--out", str(adding)), "trained on task 'adding'"),
        (("train", "--resume", "--out", str(plain)), "not written by `fastlstm train`"),
        (("predict", str(adding), "--data", str(adding)), "was not trained with --data"),
        (("plot", str(adding), "--out", str(tmp_path / "p.png")), "not a fastlstm metrics log (a zip archive, such "
         "as a checkpoint; a run's metrics log is the .csv beside its checkpoint)"),  # it quoted UTF-8's decoding error
        (("plot", str(bare_log), "--out", str(tmp_path / "p.png")),            # matplotlib's "Number of columns"
         "not a fastlstm metrics log (no column of values to draw beside step, epoch and seconds)"),
        (("plot", str(tmp_path / "typo.csv"), "--out", str(tmp_path / "p.png")),    # it quoted float()'s error
         "not a fastlstm metrics log (line 4, column 2 ('train_loss'): '0.4O' is not a number)"),
        (("plot", str(tmp_path / "long.csv"), "--out", str(tmp_path / "p.png")),    # the 9 was dropped silently
         "not a fastlstm metrics log (line 3 has 3 fields, and the header 2)"),
        (("plot", str(tmp_path / "nostep.csv"), "--out", str(tmp_path / "p.png")),
         "not a fastlstm metrics log (no step column; its columns: epoch, loss)"),
        (("plot", str(tmp_path / "norows.csv"), "--out", str(tmp_path / "p.png")),
         "not a fastlstm metrics log (no rows under the header)"),
        # a log that is no file: /dev/zero, read as one endless line until the memory ran out; a FIFO
        # with no writer, whose open blocked for ever; a folder
        *((("plot", log, "--out", str(tmp_path / "p.png")),
           f"{log}: not a fastlstm metrics log (not a regular file: a folder, a pipe or a device)")
          for log in ("/dev/zero", str(fifo), str(tmp_path))),
        (("train", "--task", "adding", "--data", str(adding)), "give --task or --data, not both"),
        # an OSError in its own words, without Python's "[Errno 2] "
        (("sample", str(tmp_path / "missing.ckpt")), f"No such file or directory: '{tmp_path / 'missing.ckpt'}'"),
        (("export", str(adding), "/proc/a.onnx"), "cannot write the ONNX model in /proc: No such file or directory"
         if importlib.util.find_spec("onnx") else "ONNX export needs the onnx package: pip install 'onnx>=1.15'"),
        (("plot", str(tmp_path / "long.csv"), "--out", str(tmp_path / "long.csv" / "p.png")),
         f"cannot write the plot in {tmp_path / 'long.csv'} (--out {tmp_path / 'long.csv' / 'p.png'}): a file of "
         f"that name is there"),
        (("carousel", "--T", "1"), "--T must be >= 2"),
        (("carousel", "--batch", "0"), "--batch must be >= 1, got 0"),
        (("sample", str(adding), "--length", "-1"), "--length must be >= 0, got -1"),
        # the options' names, not the Python API's ("use proj_size=0", "num_layers must be <= 1024")
        (("train", "--cell", "gru", "--proj", "4", "--out", str(tmp_path / "g.ckpt")),
         "--proj applies to --cell lstm only (PyTorch's proj_size); this run's cell is gru"),
        (("train", "--proj", "8", "--out", str(tmp_path / "p.ckpt"), *SMALL),
         "--proj must be below --hidden 8 (or 0 for none), got 8"),
        (("train", "--proj", "-1", "--out", str(tmp_path / "p.ckpt")), "--proj must be >= 0, got -1"),
        (("train", "--layers", "5000", "--out", str(tmp_path / "l.ckpt")), "--layers must be <= 1024, got 5000"),
        (("train", "--steps", "0", "--out", str(tmp_path / "s.ckpt")), "--steps must be >= 1, got 0"),
        (("train", "--epochs", "0", "--data", str(tmp_path / "a.csv")), "--epochs must be >= 1, got 0"),
        (("train", "--batch", "-2", "--out", str(tmp_path / "b.ckpt")), "--batch must be >= 1, got -2"),
        (("train", "--eval-every", "-3", "--out", str(tmp_path / "e.ckpt")), "--eval-every must be >= 1, got -3"),
        (("train", "--seed", "-1", "--out", str(tmp_path / "r.ckpt")), "--seed must be >= 0, got -1"),
        (("sample", str(adding), "--seed", "-1"), "--seed must be >= 0, got -1"),
        (("carousel", "--seed", "-1"), "--seed must be >= 0, got -1"),
        (("predict", str(adding), "--data", str(tmp_path / "a.csv"), "--out", str(tmp_path / "a.csv")),
         "would write over the data this command reads"),                       # its own input, replaced
        (("predict", str(adding), "--data", str(plain), "--out", str(adding)), "would write over the checkpoint"),
        (("export", str(adding), str(adding)), "would write over the checkpoint"),
        (("train", "--data", str(tmp_path / "a.csv"), "--target", "step", "--out", str(adding), "--overwrite"),
         f"--out {adding}: {tmp_path / 'a.csv'} would write over the data"),     # the run's log
        (("train", "--out", ""), "--out is empty"),                            # it trained into runs/adding.ckpt
        (("plot", str(tmp_path / "a.csv"), "--out", str(tmp_path / "a.csv")), "would write over the log"),
        # options for other runs, which a run used to ignore
        (("train", "--task", "digits", "--T", "20", "--out", str(tmp_path / "d.ckpt")),
         "--T applies to --task adding, --task text or --data text only; this run is --task digits"),
        (("train", "--window", "3", "--val-fraction", "0.5", "--out", str(tmp_path / "w.ckpt")),
         "--window applies to --data series only; this run is --task adding"),
        (("train", "--data", str(plain), "--target", "x", "--out", str(tmp_path / "k.ckpt")),   # a .dat, say
         f"--target applies to --data series only; this run is --data text (its kind from the file's name; "
         f"--kind series reads {plain} as series)"),
        (("train", "--data", str(tmp_path / "a.csv"), "--target", "step", "--val-fraction", "1.5", "--out",
          str(tmp_path / "v.ckpt")), "--val-fraction must be in (0, 1), got 1.5"),   # it named four settings
        (("train", "--momentum", "0.5", "--out", str(tmp_path / "m.ckpt")),
         "--momentum applies to --optimizer sgd only; this run's optimizer is adam"),
        (("train", "--epochs", "3", "--out", str(tmp_path / "k.ckpt")),       # it said "epochs need finite data"
         "--epochs applies to --data only; this run is --task adding"),
        (("train", "--kind", "text", "--out", str(tmp_path / "k.ckpt")),      # --data forgotten: it trained adding
         "--kind applies to --data only; this run is --task adding"),
        (("train", "--data", str(tmp_path / "a.csv"), "--target", "step", "--full", "--out", str(tmp_path / "f.ckpt")),
         "--full applies to --task adding, --task digits or --task text only; this run is --data series"),
        (("train", "--dropout", "0.3", "--out", str(tmp_path / "p.ckpt")),
         "--dropout applies between layers (to the outputs of every layer but the last): it needs --layers 2"),
        (("train", "--window", "3", "--out", str(adding)),          # onto a run: the option first, as when there
         "--window applies to --data series only; this run is --task adding"),    # is none (it said "exists")
        (("train", "--momentum", "0.5", "--out", str(adding)), "--momentum applies to --optimizer sgd only"),
        # sizes and settings the machine or the dtype cannot hold, refused before they are built
        (("train", "--T", "1000000000", "--out", str(tmp_path / "t.ckpt")),     # 15 TiB: more than any machine
         "a batch of the adding problem (T = 1000000000, B = 1000) would need 14901.2 GiB, more than this machine's"),
        (("train", "--batch", "3000000", "--out", str(tmp_path / "b.ckpt")),   # after the header and a 7 s batch
         "the workspace and the head's buffers for T = 100, B = 3000000 would need 512.3 GiB, more than this "
         "machine's"),
        (("train", "--lr", "1e300", "--out", str(tmp_path / "l.ckpt")), "Adam's lr=1e+300 is inf in float32"),
        (("train", "--task", "text", "--T", "0", "--out", str(tmp_path / "t0.ckpt")), "T must be >= 1, got 0"),
        (("train", "--task", "text", "--T", "100000", "--out", str(tmp_path / "t1.ckpt")),   # it said "integer
         f"the text task scores 20000 held-out characters (test_chars, of {len(Text().test_ids) - 1}), fewer than "
         f"a window of T = 100000"),                                          # of 46512 on Python 3.11, 51074 on 3.13
        # refused before the first step, not when the first checkpoint is due: /proc takes no files
        (("train", "--steps", "2", "--out", "/proc/fastlstm-run.ckpt", *SMALL),
         "cannot write the run's files in /proc (--out /proc/fastlstm-run.ckpt)"),
        (("train", "--steps", "2", "--out", str(tmp_path / ("n" * 250 + ".ckpt")), *SMALL),   # its .best.ckpt: 260 bytes
         f"'{'n' * 250}.best.ckpt' is longer than the 255 bytes a file name may have there"),
    ]
    inputs = {p: p.read_bytes() for p in (adding, plain, tmp_path / "a.csv")}
    with ThreadPoolExecutor(os.cpu_count()) as pool:          # each a process of its own, refused alone
        runs = list(pool.map(lambda argv: _run(*argv), [argv for argv, _ in cases]))
    for (argv, message), r in zip(cases, runs):
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert r.stderr.startswith("fastlstm: error: ") and message in r.stderr, (argv, r.stderr)
        assert "[Errno" not in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not r.stdout, (argv, r.stdout)     # no header for a run that never starts
    assert all(p.read_bytes() == b for p, b in inputs.items())


def test_a_checkpoint_from_before_run_states_still_resumes(tmp_path):
    """Checkpoints of `fastlstm train` written before schedules and early stopping carry only
    the task, the Generator's state and the history (the metrics log's rows, which later
    checkpoints count): --resume continues them with the defaults of that time (constant
    learning rate, no early stopping)."""
    out = tmp_path / "old.ckpt"
    assert _run("train", "--steps", "20", "--out", str(out), *SMALL).returncode == 0
    m = fastlstm.load(out)
    m.save(out, extra={"task": m.extra["task"], "rng": m.extra["rng"], "history": history(out)})
    os.remove(tmp_path / "old.csv")         # the log is rebuilt from the history the checkpoint held
    r = _run("train", "--steps", "30", "--out", str(out), "--resume", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "note" not in r.stdout and [h["step"] for h in history(out)] == [10, 20, 30]
    assert fastlstm.load(out).steps == 30 and fastlstm.load(out).extra["evaluations"] == 3


def test_a_checkpoint_whose_run_state_is_hostile_is_refused_before_any_step(tmp_path, capsys):
    """Every field of the run state that --resume continues (batch order, schedule, early
    stopping, running loss, history) is checked: a wrong type or an impossible value stops
    the command with a clear error, and the checkpoint stays as it was."""
    from fastlstm import cli
    good = tmp_path / "good.ckpt"
    assert cli.main(["train", "--steps", "20", "--out", str(good), *SMALL]) == 0
    extra = fastlstm.load(good).extra
    changes = [(("run", "schedule", "kind"), "step"), (("run", "schedule", "warmup"), -1),
               (("run", "schedule", "factor"), 1.5), (("run", "schedule", "patience"), 0),
               (("run", "schedule", "min_scale"), "x"), (("run", "schedule", "base_lr"), -1.0),
               (("run", "schedule", "total"), 0), (("run", "schedule", "scale"), 2.0),
               (("run", "schedule", "bad"), None), (("run", "stopper", "best"), "x"),
               (("run", "stopper", "best_step"), -1), (("run", "stopper", "bad"), []),
               (("run", "batches", "epoch"), -1), (("run", "batches", "pos"), True),
               (("run", "loss_sum"), None), (("run", "loss_count"), -1), (("run", "total"), 0),
               (("run", "eval_every"), 0), (("run", "start"), -1), (("run", "start"), 21), (("run",), None), (("batch",), "x"), (("total",), -1),
               (("history",), "x"), (("history",), [{"loss": 1.0}]), (("history",), [{"step": 10, "lr": "x"}]),
               (("evaluations",), -1), (("evaluations",), "2"), (("seconds",), -1.0), (("seconds",), "x"),
               (("options",), "x"), (("options",), [1])]
    bad = tmp_path / "bad.ckpt"
    for keys, value in changes:
        changed = json.loads(json.dumps(extra))
        d = changed
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
        fastlstm.load(good).save(bad, extra=changed)
        before = bad.read_bytes()
        capsys.readouterr()
        assert cli.main(["train", "--steps", "30", "--out", str(bad), "--resume", *SMALL]) == 2, (keys, value)
        err = capsys.readouterr().err
        assert err.startswith("fastlstm: error: ") and "unusable" in err, (keys, value, err)
        assert bad.read_bytes() == before
    assert cli.main(["train", "--steps", "30", "--out", str(good), "--resume", *SMALL]) == 0     # the control
    assert fastlstm.load(good).steps == 30


def test_a_new_run_never_writes_over_an_existing_one(tmp_path, capsys):
    """Training again with the same --out is refused unless --resume continues the run or
    --overwrite starts afresh: a repeated command must not destroy a long run."""
    from fastlstm import cli
    out = tmp_path / "a.ckpt"
    assert cli.main(["train", "--steps", "10", "--out", str(out), *SMALL]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert cli.main(["train", "--steps", "10", "--out", str(out), *SMALL]) == 2
    assert f"{out} exists: continue that run with --resume" in capsys.readouterr().err
    assert out.read_bytes() == before
    os.replace(out, tmp_path / "moved.ckpt")                     # the best checkpoint alone counts too
    assert cli.main(["train", "--steps", "10", "--out", str(out), *SMALL]) == 2
    assert "a.best.ckpt exists" in capsys.readouterr().err
    assert cli.main(["train", "--steps", "10", "--out", str(out), "--resume", "--overwrite", *SMALL]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli.main(["train", "--steps", "20", "--out", str(out), "--overwrite", "--seed", "1", *SMALL]) == 0
    assert fastlstm.load(out).steps == 20


def _holding_the_lock(out, *args):
    """A `fastlstm train --out out ...` process, returned once it holds the run's lock."""
    lock = out.with_suffix(".lock")
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", "--out", str(out), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text() == f"fastlstm train {p.pid}\n"):
        if p.poll() is not None or time.time() > deadline:
            p.kill()
            pytest.fail(f"the run never took its lock: {p.stderr.read()}")
        time.sleep(0.05)
    return p


def test_a_second_run_onto_the_same_out_is_refused_while_the_first_writes(tmp_path):
    """Two runs started onto one --out before either had written a checkpoint (or with
    --resume, --overwrite) wrote their checkpoints and logs over each other's in turn. The
    second is refused while the first runs; the lock goes with the first (a stale lock file
    left by a killed run blocks nothing)."""
    out, lock = tmp_path / "a.ckpt", tmp_path / "a.lock"
    for first_args, second in [((*SMALL, "--eval-every", "1000000"), [[], ["--overwrite"]]),   # no checkpoint yet
                               (("--resume", "--quiet"), [["--resume"]])]:                    # a resumed run
        first = _holding_the_lock(out, "--steps", "1000000", *first_args)
        try:
            for how in second:
                r = _run("train", "--out", str(out), *how, "--quiet")
                assert r.returncode == 2, r.stderr
                assert f"another fastlstm train (pid {first.pid}) is writing {out}" in r.stderr, r.stderr
            assert first.poll() is None                                      # the first runs on
            first.send_signal(signal.SIGINT)
            assert first.wait(120) == 130
        finally:
            first.kill()
            first.communicate()                                          # closes its pipes
        assert not lock.exists() and fastlstm.load(out).steps > 0
    lock.write_text("fastlstm train 12345\n")                      # as a run killed with SIGKILL leaves it
    r = _run("train", "--steps", "10", "--out", str(out), "--overwrite", *SMALL)
    assert r.returncode == 0, r.stderr
    assert not lock.exists() and fastlstm.load(out).steps == 10
    lock.write_text("notes of mine\n")                              # a file of that name that is no lock
    r = _run("train", "--steps", "10", "--out", str(out), "--overwrite", *SMALL)
    assert r.returncode == 2 and f"{lock} exists and is not a fastlstm lock" in r.stderr, r.stderr
    assert lock.read_text() == "notes of mine\n" and fastlstm.load(out).steps == 10
    lock.unlink()
    lock.symlink_to(tmp_path / "gone" / "a.lock")                   # a link into a folder not there: no lock
    r = _run("train", "--steps", "10", "--out", str(out), "--overwrite", *SMALL)
    assert r.returncode == 2 and f"error: cannot create {lock}, the lock of --out {out}: No such file or directory" \
        in r.stderr, r.stderr
    assert lock.is_symlink() and fastlstm.load(out).steps == 10


def test_a_file_system_without_locks_runs_unlocked_and_says_so(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl
    from fastlstm import cli

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "n.ckpt"
    assert cli.main(["train", "--steps", "10", "--out", str(out), *SMALL]) == 0
    assert "takes no locks (No locks available), so a second run onto it would not be refused" in capsys.readouterr().err
    assert fastlstm.load(out).steps == 10 and not (tmp_path / "n.lock").exists()


def test_resume_without_a_run_to_continue_says_so(tmp_path):
    r = _run("train", "--out", str(tmp_path / "none.ckpt"), "--resume", "--quiet")
    assert r.returncode == 2 and f"there is no run at --out {tmp_path / 'none.ckpt'} to continue" in r.stderr


def _disk_full_at(limit):
    """A preexec_fn: the child may write files of at most `limit` bytes, as on a disk that
    fills up (Python ignores SIGXFSZ, so a write past it raises EFBIG)."""
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_that_fails_names_its_file_and_leaves_it_as_it_was(tmp_path):
    """A full disk during a checkpoint, the metrics log, predictions, an ONNX model, a
    plot or the run's lock: status 2, an error naming the file, the file as it was (not half
    written, not truncated; the log without a part of a row) and no temporary left beside
    it. Files are made as any new file is, under the umask (they were 0600 when written
    through mkstemp)."""
    pytest.importorskip("onnx")
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6, 2)).astype(np.float32)
    np.savez(tmp_path / "seq.npz", x=x, y=(x[:, :, 0].sum(1) > 0).astype(np.int64))
    ckpt, log = tmp_path / "seq.ckpt", tmp_path / "seq.csv"
    r = _run("train", "--data", str(tmp_path / "seq.npz"), "--steps", "4", "--eval-every", "2", "--hidden", "4",
             "--quiet", "--out", str(ckpt))
    assert r.returncode == 0, r.stderr
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    assert (ckpt.stat().st_mode & 0o777, log.stat().st_mode & 0o777) == (mode, mode)
    assert b"\r" not in log.read_bytes()            # lines end in \n, not the csv module's \r\n
    outs = {"predictions": tmp_path / "p.csv", "ONNX model": tmp_path / "m.onnx", "plot": tmp_path / "c.png"}
    commands = {"predictions": ["predict", str(ckpt), "--data", str(tmp_path / "seq.npz"), "--out"],
                "ONNX model": ["export", str(ckpt)], "plot": ["plot", str(log), "--out"]}
    for what, path in outs.items():
        path.write_bytes(b"an earlier result")
        p = _run(*commands[what], str(path), preexec_fn=_disk_full_at(16))
        assert p.returncode == 2 and f"cannot write the {what}: File too large: '{path}'" in p.stderr, p.stderr
        assert path.read_bytes() == b"an earlier result", what
    kept = ckpt.read_bytes(), log.read_bytes()
    resume = ["train", "--data", str(tmp_path / "seq.npz"), "--steps", "8", "--eval-every", "2", "--hidden", "4",
              "--quiet", "--out", str(ckpt), "--resume"]
    # the log's row comes first, then the checkpoint that counts it: the checkpoint fails, and the
    # row it does not count is cut off by the next resume, where the log's own append fails
    p = _run(*resume, preexec_fn=_disk_full_at(2048))
    assert p.returncode == 2 and f"cannot write a checkpoint: File too large: '{ckpt}'" in p.stderr, p.stderr
    assert ckpt.read_bytes() == kept[0] and log.read_bytes().startswith(kept[1] + b"6,")
    p = _run(*resume, preexec_fn=_disk_full_at(len(kept[1]) + 10))
    assert p.returncode == 2 and f"cannot write the metrics log: File too large: '{log}'" in p.stderr, p.stderr
    assert (ckpt.read_bytes(), log.read_bytes()) == kept              # not a part of the row
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")], os.listdir(tmp_path)
    assert _run(*resume).returncode == 0 and [h["step"] for h in history(ckpt)] == [2, 4, 6, 8]
    fresh = tmp_path / "fresh"                          # the run's lock, its first write ("error: [Errno 28]
    fresh.mkdir()                                       # No space left on device", and the lock left behind)
    p = _run("train", "--steps", "2", "--hidden", "4", "--quiet", "--out", str(fresh / "a.ckpt"),
             preexec_fn=_disk_full_at(0))
    assert p.returncode == 2 and f"error: cannot write {fresh / 'a.lock'}, the lock of --out {fresh / 'a.ckpt'}: " \
        "File too large" in p.stderr, p.stderr
    assert not os.listdir(fresh)


def test_a_log_that_cannot_be_appended_to_stops_resume_before_its_first_step(tmp_path, monkeypatch, capsys):
    """A log the run may not write (another user's, read-only) stops --resume before it
    trains, not at its first evaluation (root writes any file: the refusal is simulated)."""
    from fastlstm import cli, training
    out, log = tmp_path / "a.ckpt", tmp_path / "a.csv"
    assert cli.main(["train", "--steps", "10", "--out", str(out), *SMALL]) == 0
    kept = out.read_bytes(), log.read_bytes()

    def refuse(path, data, what):
        raise PermissionError(errno.EACCES, f"cannot write {what}: Permission denied", path)
    monkeypatch.setattr(training, "append_file", refuse)
    capsys.readouterr()
    assert cli.main(["train", "--steps", "20", "--out", str(out), "--resume", *SMALL]) == 2
    said = capsys.readouterr()
    assert f"fastlstm: error: cannot write the metrics log: Permission denied: '{log}'" in said.err, said.err
    assert "step" not in said.out and (out.read_bytes(), log.read_bytes()) == kept, said.out


def test_outputs_through_links_and_devices_are_written_there_not_replaced(tmp_path):
    """The atomic write renames a temporary over the path; for `--out /dev/stdout` (a link
    to a pipe here) that would have replaced the link (as root, in /dev), so a path that
    is no regular file is written in place, and a link's target is written, the link
    kept. A run's --out must be a file's name: /dev/null or a folder is refused."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6, 2)).astype(np.float32)
    data = tmp_path / "seq.npz"
    np.savez(data, x=x, y=(x[:, :, 0].sum(1) > 0).astype(np.int64))
    ckpt = tmp_path / "seq.ckpt"
    assert _run("train", "--data", str(data), "--steps", "2", "--hidden", "4", "--quiet", "--out", str(ckpt)).returncode == 0
    stdout_was_link = os.path.islink("/dev/stdout")
    r = _run("predict", str(ckpt), "--data", str(data), "--out", "/dev/stdout")
    assert r.returncode == 0 and r.stdout.startswith("row,p0,p1,class\n0,") and r.stdout.count("\n") == 41, r.stderr
    assert os.path.islink("/dev/stdout") == stdout_was_link
    link, target = tmp_path / "link.csv", tmp_path / "target.csv"
    link.symlink_to(target.name)
    assert _run("predict", str(ckpt), "--data", str(data), "--out", str(link)).returncode == 0
    assert link.is_symlink() and target.read_text() == r.stdout
    os.mkfifo(tmp_path / "fifo.csv")
    with subprocess.Popen(["cat", str(tmp_path / "fifo.csv")], stdout=subprocess.PIPE, text=True) as reader:
        assert _run("predict", str(ckpt), "--data", str(data), "--out", str(tmp_path / "fifo.csv")).returncode == 0
        assert reader.communicate(timeout=60)[0] == r.stdout
    for out, said in (("/dev/null", "/dev/null is not a regular file"),
                      (str(tmp_path), f"{tmp_path} is a folder; give a checkpoint's file name, such as "
                                      f"{tmp_path / 'run.ckpt'}")):
        r = _run("train", "--steps", "2", "--out", out, "--overwrite", *SMALL)
        assert r.returncode == 2 and said in r.stderr, r.stderr
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


@pytest.mark.parametrize("module, command, said", [
    ("mpi4py", ["train", "--distributed", "--steps", "2", "--quiet", "--out", "OUT"],
     "--distributed (DataParallel) needs mpi4py: pip install 'mpi4py>=3.1' mpich, then launch the ranks with mpiexec"),
    ("sklearn", ["train", "--task", "digits", "--steps", "2", "--quiet", "--out", "OUT"],
     "the digits task needs scikit-learn: pip install 'scikit-learn>=1.3'"),
    ("onnx", ["export", "CKPT", "m.onnx"], "ONNX export needs the onnx package: pip install 'onnx>=1.15' 'onnxruntime>=1.17'"),
    ("matplotlib", ["plot", "LOG", "--out", "p.png"], "plot needs matplotlib: pip install 'matplotlib>=3.6'")])
def test_a_missing_extra_is_named_with_a_pip_command_that_installs_it(tmp_path, module, command, said):
    """An absent optional package: --distributed ended in a ModuleNotFoundError traceback, and
    then each said pip install 'fastlstm[mpi]', which asks PyPI for a project fastlstm is
    not (it installs from its checkout): the command now names the extra's own packages."""
    ckpt, log = tmp_path / "m.ckpt", tmp_path / "m.csv"
    fastlstm.Model(1, 4, 1, seed=0).save(ckpt)
    log.write_text("step,seconds,train_loss,lr\n1,0.1,0.5,0.01\n")
    command = [{"CKPT": str(ckpt), "LOG": str(log), "OUT": str(tmp_path / "d.ckpt")}.get(a, a) for a in command]
    code = (f"import sys; sys.modules[{module!r}] = None\n"      # importing it now fails as if not installed
            f"from fastlstm import cli\nsys.exit(cli.main({command!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "fastlstm[" not in r.stderr and not (tmp_path / "d.ckpt").exists()
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt", "m.csv"]


def test_a_missing_extra_of_a_fastlstm_not_installed_is_named_for_its_checkout(monkeypatch, tmp_path):
    """Imported from a checkout on sys.path, fastlstm has no metadata to read the extra's
    packages from: the command is the checkout's own."""
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "requires", absent)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(RuntimeError, match=r"^ONNX export needs the onnx package: pip install -e '\.\[onnx\]' in "
                                           r"fastlstm's checkout$"):
        fastlstm.export_onnx(fastlstm.Model(1, 4, 1, seed=0), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_output_in_an_encoding_that_lacks_its_characters_is_escaped_not_cut(tmp_path):
    """Under PYTHONIOENCODING=ascii (or a Latin-1 locale), `sample` stopped mid-text, and
    `train` on a path with an é and `predict --out -` with a column named so stopped at
    their first line, with "error: 'ascii' codec can't encode character"; so did `train` on
    a file name that is not UTF-8 under a strict UTF-8 output ("surrogates not allowed").
    Such characters now go out as escapes, as Python writes them on standard error, and a
    note says so."""
    folder = tmp_path / "données"
    folder.mkdir()
    (folder / "notes.txt").write_text("naïve café — “quoted” text. " * 40, encoding="utf-8")
    (folder / "temp.csv").write_text("date,température\n" + "".join(
        f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00,{np.sin(i / 5):.3f}\n" for i in range(200)), encoding="utf-8")
    text, series = tmp_path / "t.ckpt", tmp_path / "s.ckpt"
    latin = os.fsencode(tmp_path) + b"/caf\xe9.txt"       # a file name that is not UTF-8: its \xe9 reads as \udce9
    with open(latin, "w", encoding="utf-8") as f:
        f.write("some text, " * 200)
    escaped = str(folder).replace("é", "\\xe9")
    notes, csv = str(folder / "notes.txt"), str(folder / "temp.csv")
    runs = [("ascii", ("train", "--data", notes, "--steps", "2", "--hidden", "4", "--out", str(text)),
             "fastlstm: text " + escaped),
            ("ascii", ("sample", str(text), "--prime", "café —", "--length", "5"), "caf\\xe9 \\u2014"),
            ("ascii", ("train", "--data", csv, "--target", "température", "--window", "8", "--steps", "2",
                       "--hidden", "4", "--quiet", "--out", str(series)), "fastlstm: series " + escaped),
            ("ascii", ("predict", str(series), "--data", csv, "--out", "-"), "time,temp\\xe9rature\n"),
            # UTF-8 and strict: a surrogate (\udce9) has no encoding there
            ("utf-8", ("train", "--data", os.fsdecode(latin), "--steps", "2", "--hidden", "4", "--quiet",
                       "--out", str(tmp_path / "l.ckpt")), "fastlstm: text " + str(tmp_path) + "/caf\\udce9.txt")]
    for encoding, args, starts in runs:
        r = _run(*args, env=dict(os.environ, PYTHONIOENCODING=encoding), errors="surrogateescape")
        assert r.returncode == 0 and r.stdout.startswith(starts), (r.stdout[:200], r.stderr)
        assert r.stderr.count(f"fastlstm: note: standard output's encoding ({encoding}) lacks") == 1, r.stderr


def test_numba_disable_jit_is_refused_saying_what_to_unset(tmp_path):
    """NUMBA_DISABLE_JIT=1 (set to debug one's own Numba code) ran the kernels as Python,
    which stopped deep inside with "NotImplementedError: <intrinsic tile> is not usable in
    pure-python". The kernels now refuse as they load, naming the variable."""
    r = _run("train", "--steps", "1", "--out", str(tmp_path / "a.ckpt"), env=dict(os.environ, NUMBA_DISABLE_JIT="1"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "fastlstm: error: fastlstm's kernels run compiled only, and NUMBA_DISABLE_JIT=1 is set" in r.stderr
    assert not os.listdir(tmp_path)
