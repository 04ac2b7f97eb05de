"""Your own data: text files, CSV series and arrays, from `fastlstm train --data` to
`fastlstm predict`, on data the tests make and on data that ships offline; bad data get
a clear error with their place; resume stays bitwise; Model.fit."""
import datetime as dt
import gc
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import fastlstm
from fastlstm import cli, data, training

from conftest import traced_peak
from test_cli import _read_until, _run, history


def write_series(path, n=1200, scale=1.0, shift=0.0, seed=0):
    """Hourly noisy sines with a daily season (24 rows) and a trend, and a date column."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    load = 10 + 0.002 * t + 3 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, n)
    temp = np.cos(2 * np.pi * t / 24) + rng.normal(0, 0.1, n)
    start = dt.datetime(2024, 1, 1)
    with open(path, "w") as f:
        f.write("date,load,temp\n")
        for i in range(n):
            f.write(f"{(start + dt.timedelta(hours=i)).isoformat()},{float(load[i] * scale + shift)!r},{temp[i]:.4f}\n")
    return path


def write_arrays(path, N=600, T=20, D=3, seed=0):
    """Labelled sequences of varying lengths: 4 classes from the signs of two running sums."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, T, D)).astype(np.float32)
    L = rng.integers(5, T + 1, N)
    for i in range(N):
        x[i, L[i]:] = 0
    y = np.array([int(x[i, :L[i], 0].sum() > 0) + 2 * int(x[i, :L[i], 1].mean() > 0.2) for i in range(N)])
    np.savez(path, x=x, y=y, lengths=L)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    from pydoc_data.topics import topics
    (d / "topics.txt").write_text("\n\n".join(topics[k] for k in sorted(topics)), encoding="utf-8")
    return dict(series=write_series(d / "load.csv"), arrays=write_arrays(d / "seq.npz"), text=d / "topics.txt",
                dir=d)


def test_series_beats_the_naive_forecast_and_predict_speaks_the_data_units(files, tmp_path):
    out = tmp_path / "load.ckpt"
    args = ["--target", "load", "--window", "48", "--horizon", "3", "--season", "24", "--epochs", "6",
            "--quiet", "--seed", "1"]
    r = _run("train", "--data", str(files["series"]), *args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    best = min(history(out), key=lambda h: h["val_rmse"])
    assert best["val_rmse"] < 0.8 * best["naive_rmse"] and best["skill"] > 0.2, best
    spec = fastlstm.load(out).extra["data"]
    assert spec["settings"]["features"] == ["load", "temp"] and spec["time_col"] == "date"   # date kept out
    # the same series in other units (x 1000 + 5000) trains on the same standardised numbers,
    # so forecasts come out in the new units
    scaled = write_series(tmp_path / "scaled.csv", scale=1000.0, shift=5000.0)
    out2 = tmp_path / "scaled-run.ckpt"
    assert _run("train", "--data", str(scaled), *args, "--out", str(out2)).returncode == 0
    p1, p2 = (_run("predict", str(o), "--data", str(f)) for o, f in ((out, files["series"]), (out2, scaled)))
    assert p1.returncode == p2.returncode == 0, p1.stderr + p2.stderr
    rows1, rows2 = ([line.split(",") for line in p.stdout.split()] for p in (p1, p2))
    assert rows1[0] == rows2[0] == ["time", "load"] and len(rows1) == 4
    assert rows1[1][0] == "2024-02-20T00:00:00"                        # the hour after the file's last row
    v1, v2 = (np.array([float(r[1]) for r in rows[1:]]) for rows in (rows1, rows2))
    assert np.all((5 < v1) & (v1 < 20)), v1
    np.testing.assert_allclose(v2, 1000 * v1 + 5000, rtol=2e-4)
    bt = tmp_path / "bt.csv"
    r = _run("predict", str(out), "--data", str(files["series"]), "--backtest", "--out", str(bt))
    assert r.returncode == 0 and "backtest over 1150 windows" in r.stderr, r.stderr
    lines = bt.read_text().split()
    assert lines[0] == "origin,time,step,load_forecast,load_actual" and len(lines) == 1 + 1150 * 3
    r = _run("predict", str(out), "--data", str(files["series"]), "--backtest", "--out", "-")   # - is stdout
    assert r.returncode == 0 and r.stdout.split() == lines and not os.path.exists("-"), r.stderr
    short = tmp_path / "short.csv"                               # fewer rows than one window and its horizon
    short.write_text("\n".join(files["series"].read_text().splitlines()[:51]) + "\n")
    r = _run("predict", str(out), "--data", str(short), "--backtest")
    assert r.returncode == 2 and "short.csv: 50 rows; a backtest needs at least window + horizon = 51" in r.stderr, \
        r.stderr                                                 # it reported a skill over 0 windows
    short.write_text("\n".join(files["series"].read_text().splitlines()[:48]) + "\n")     # and than a window
    r = _run("predict", str(out), "--data", str(short))
    assert r.returncode == 2 and "short.csv: 47 rows, fewer than the window (48)" in r.stderr, r.stderr


def test_predict_reads_a_file_written_otherwise_than_the_runs_with_the_reading_options(tmp_path, capsys):
    """--sep, --decimal, --fill and --layout read predict's file otherwise than the run read
    its own (a spreadsheet's ';' and decimal commas, a gap, time-major arrays); the errors
    pointed at them, and predict took none of them."""
    series, out = write_series(tmp_path / "load.csv", n=200), str(tmp_path / "run.ckpt")
    assert cli.main(["train", "--data", str(series), "--target", "load", "--window", "24", "--steps", "2",
                     "--quiet", "--out", out]) == 0

    def predict(path, *options):
        capsys.readouterr()
        status = cli.main(["predict", out, "--data", str(path), *options])
        return status, capsys.readouterr()
    status, plain = predict(series)
    assert status == 0
    rows = series.read_text().splitlines()
    semi = tmp_path / "semi.csv"                    # Excel's export in a decimal-comma locale
    semi.write_text("\n".join(r.replace(",", ";").replace(".", ",") for r in rows) + "\n")
    status, said = predict(semi)
    assert status == 2 and "pass --sep ';' (and --decimal , for decimal commas)" in said.err, said.err
    status, said = predict(semi, "--sep", ";", "--decimal", ",")
    assert status == 0 and said.out == plain.out.replace(",", ";").replace(".", ","), said   # in the file's dialect
    gap = tmp_path / "gap.csv"
    gap.write_text("\n".join(rows[:-2] + [rows[-2].split(",")[0] + ",," + rows[-2].split(",")[2], rows[-1]]) + "\n")
    status, said = predict(gap)
    assert status == 2 and (f"line {len(rows) - 1}, column 2 ('load'): missing value (pass --fill ffill or --fill "
                            f"zero to fill missing values)") in said.err, said.err      # an option predict now takes
    assert predict(gap, "--fill", "ffill")[0] == 0
    for column, kind in (("load", "target"), ("temp", "feature")):     # it said --features, which predict
        renamed = tmp_path / f"no_{column}.csv"                          # has not, and to give a number
        renamed.write_text("\n".join([rows[0].replace(column, "x")] + rows[1:]) + "\n")
        status, said = predict(renamed)
        assert status == 2 and (f"no_{column}.csv: the model's {kind} {column!r} is not a column of this file; its "
                                f"columns are: {rows[0].replace(column, 'x').replace(',', ', ')}\n") in said.err, said.err
    cased = tmp_path / "cased.csv"                                     # a header written in another case
    cased.write_text("\n".join([rows[0].replace("load", "Load")] + rows[1:]) + "\n")
    status, said = predict(cased)
    assert status == 2 and "the model's target 'load' is not a column of this file; its columns are: " in said.err \
        and said.err.endswith("; 'Load' differs from it in case alone (names match exactly)\n"), said.err
    status, said = predict(series, "--layout", "time")
    assert status == 2 and f"--layout applies to a checkpoint trained on arrays; {out} was trained on series" in said.err

    arrays, out = write_arrays(tmp_path / "seq.npz", N=40, T=6), str(tmp_path / "arrays.ckpt")
    assert cli.main(["train", "--data", str(arrays), "--steps", "2", "--quiet", "--out", out]) == 0
    status, plain = predict(arrays)
    a = np.load(arrays)
    np.savez(tmp_path / "tm.npz", x=a["x"].transpose(1, 0, 2), y=a["y"], lengths=a["lengths"])
    status, said = predict(tmp_path / "tm.npz", "--layout", "time")
    assert status == 0 and said.out == plain.out, said.err
    status, said = predict(arrays, "--sep", ";")
    assert status == 2 and "--sep applies to a checkpoint trained on series" in said.err
    text, out = tmp_path / "notes.txt", str(tmp_path / "text.ckpt")
    text.write_text("the cat sat on the mat\n" * 20)
    assert cli.main(["train", "--data", str(text), "--T", "8", "--steps", "2", "--quiet", "--out", out]) == 0
    status, said = predict(arrays)                  # it said "pass --kind arrays", which predict refused
    assert status == 2 and ("seq.npz: not a text file (a NUL byte at line 1, column 6); the checkpoint is a model "
                            "of text, which reads UTF-8 text files") in said.err, said.err


def test_text_file_trains_below_the_unigram_entropy_and_samples(files, tmp_path):
    out = tmp_path / "topics.ckpt"
    r = _run("train", "--data", str(files["text"]), "--steps", "300", "--hidden", "128", "--eval-every", "150",
             "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    h = history(out)
    assert h[-1]["val_bpc"] < h[-1]["unigram_bpc"] - 0.5, h[-1]
    r = _run("sample", str(out), "--prime", "The ", "--length", "80", "--seed", "3")
    assert r.returncode == 0 and r.stdout.startswith("The ") and len(r.stdout) > 80, r.stderr
    r = _run("predict", str(out), "--data", str(files["text"]))
    assert r.returncode == 0 and r.stdout.startswith("characters,bpc\n"), r.stderr
    assert 2.0 < float(r.stdout.split()[1].split(",")[1]) < h[-1]["unigram_bpc"]


def test_predict_scores_every_character_of_a_text_file(tmp_path, capsys):
    """predict's bits per character count every character but the first: windows of T, the
    last one shorter. It dropped the tail past the last whole window, and a file shorter
    than T + 1 characters failed with "float division by zero"."""
    text, out = tmp_path / "notes.txt", str(tmp_path / "text.ckpt")
    text.write_text("the cat sat on the mat; " * 20)
    assert cli.main(["train", "--data", str(text), "--T", "8", "--steps", "3", "--quiet", "--out", out]) == 0
    model, vocab = fastlstm.load(out), fastlstm.load(out).extra["data"]["vocab"]
    for chars in ("the cat sat on the mat; the dog", "the c", "th"):          # 31: 3 windows of 8 and one of 6
        (tmp_path / "score.txt").write_text(chars)
        capsys.readouterr()
        assert cli.main(["predict", out, "--data", str(tmp_path / "score.txt")]) == 0
        header, row = capsys.readouterr().out.split()
        ids = np.array([vocab.index(c) if c in vocab[1:] else 0 for c in chars])     # 0: unknown ("d")
        nats = 0.0
        for a in range(0, len(ids) - 1, 8):                  # each window from its own zero state, as predict
            x, y = ids[a:a + 8][:len(ids) - 1 - a], ids[a + 1:a + 9]
            p = model.predict(x[:, None], batch_size=None)[:, 0]                  # (T', V) probabilities
            nats -= np.log(p[np.arange(len(y)), y]).sum()
        assert header == "characters,bpc" and row.split(",")[0] == str(len(chars) - 1)
        assert float(row.split(",")[1]) == pytest.approx(nats / (len(chars) - 1) / np.log(2), rel=1e-5), chars
    (tmp_path / "score.txt").write_text("t")
    assert cli.main(["predict", out, "--data", str(tmp_path / "score.txt")]) == 2
    assert "score.txt: 1 character; a score needs two or more" in capsys.readouterr().err
    assert cli.main(["predict", out, "--data", str(text), "--backtest"]) == 2        # it said "is for series"
    assert capsys.readouterr().err == (f"fastlstm: error: --backtest is for a model trained on a series (a CSV); "
                                       f"{out} was trained on text\n")


def test_a_generated_text_trains_below_its_unigram_entropy(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "its", "bed"]
    text = " ".join(rng.choice(words, 20000)) + "\n"
    (tmp_path / "words.txt").write_text(text)
    out = tmp_path / "words.ckpt"
    assert cli.main(["train", "--data", str(tmp_path / "words.txt"), "--hidden", "32", "--T", "32", "--steps",
                     "150", "--eval-every", "150", "--quiet", "--out", str(out)]) == 0
    h = history(out)[-1]
    assert h["val_bpc"] < h["unigram_bpc"] - 0.7, h          # spelling is learnt: far below the letters' entropy
    vocab = fastlstm.load(out).extra["data"]["vocab"]          # the unknown, the 14 letters and the space:
    assert vocab[0] == "" and len(vocab) == 16 and "\n" not in vocab     # the final newline is held out
    capsys.readouterr()                    # no capital T here: sample without --prime starts from nothing
    assert cli.main(["sample", str(out), "--length", "40", "--seed", "0"]) == 0   # (it failed on --prime 'The ')
    text = capsys.readouterr().out
    assert len(text) == 41 and text[-1] == "\n" and set(text[:-1]) <= set(vocab) | {"\ufffd"}, text


def test_arrays_beat_the_majority_class_and_predict_gives_probabilities(files, tmp_path):
    out = tmp_path / "seq.ckpt"
    r = _run("train", "--data", str(files["arrays"]), "--epochs", "15", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    best = max(history(out), key=lambda h: h["val_accuracy"])
    assert best["val_accuracy"] > best["majority"] + 0.3, best
    # validation once an epoch by default: 480 training rows in batches of 32
    assert [h["step"] for h in history(out)] == [15 * k for k in range(1, 16)]
    preds = tmp_path / "p.csv"
    r = _run("predict", str(out), "--data", str(files["arrays"]), "--out", str(preds))
    assert r.returncode == 0 and "accuracy" in r.stderr, r.stderr
    p = np.loadtxt(preds, delimiter=",", skiprows=1)
    assert p.shape == (600, 6) and np.allclose(p[:, 1:5].sum(axis=1), 1, atol=1e-4)
    # arrays the checkpoint's model cannot take: said before a row is written (D read "x must have
    # shape (*, *, 3), got (8, 10, 4)", time-major; labels failed after the rows; float y crashed)
    x = np.load(files["arrays"])["x"]
    for name, arrays, said in (("d.npz", dict(x=np.zeros(x.shape[:2] + (x.shape[2] + 1,), np.float32)),
                                f"x has D = {x.shape[2] + 1} inputs a step, and this model takes {x.shape[2]}"),
                               ("y.npz", dict(x=x, y=np.full(len(x), 9)), "y's class labels reach 9, and this model "
                                                                         "has 4 classes, labels 0..3"),
                               ("f.npz", dict(x=x, y=np.zeros((len(x), 2), np.float32)),
                                "y holds float targets, and the checkpoint was trained on class labels")):
        np.savez(tmp_path / name, **arrays)
        r = _run("predict", str(out), "--data", str(tmp_path / name))
        assert r.returncode == 2 and said in r.stderr and not r.stdout, (name, r.stderr)


def test_arrays_with_a_target_per_step_train_and_predict_from_the_command_line(tmp_path, capsys):
    """--output every: y (N, T) labels or (N, T, O) values laid out as x (or time-major with
    --layout time); steps past a row's length count for nothing, and predict writes a row a
    step within each length. (The command line took a target per sequence alone, and said
    of y (N, T) only that it must be (N,) or (N, O).)"""
    rng = np.random.default_rng(0)
    N, T = 600, 12
    x = rng.standard_normal((N, T, 1)).astype(np.float32)
    L = rng.integers(6, T + 1, N)
    y = np.zeros((N, T), np.int64)
    y[:, 2:] = x[:, :-2, 0] > 0                                  # the sign two steps back
    y[np.arange(T)[None, :] >= L[:, None]] = 7                   # past the length: not a class, not counted
    np.savez(tmp_path / "seq.npz", x=x, y=y, lengths=L)
    out = tmp_path / "every.ckpt"
    assert cli.main(["train", "--data", str(tmp_path / "seq.npz"), "--output", "every", "--hidden", "16",
                     "--epochs", "25", "--quiet", "--out", str(out)]) == 0
    m = fastlstm.load(out)
    assert m.output == "every" and m.output_size == 2
    best = max(history(out), key=lambda h: h["val_accuracy"])
    assert best["val_accuracy"] > 0.95 > best["majority"] + 0.2, best
    preds = tmp_path / "p.csv"
    np.savez(tmp_path / "new.npz", x=x[:5], lengths=L[:5])
    assert cli.main(["predict", str(out), "--data", str(tmp_path / "new.npz"), "--out", str(preds)]) == 0
    p = np.loadtxt(preds, delimiter=",", skiprows=1)
    assert preds.read_text().startswith("row,step,p0,p1,class\n")
    assert [(int(n), int(t)) for n, t in p[:, :2]] == [(n, t) for n in range(5) for t in range(L[n])]
    direct = m.predict(np.ascontiguousarray(x[:5].transpose(1, 0, 2)), L[:5])
    assert np.allclose(p[:, 2:4], [direct[t, n] for n in range(5) for t in range(L[n])], atol=1e-5)
    capsys.readouterr()
    assert cli.main(["predict", str(out), "--data", str(tmp_path / "seq.npz"), "--out", str(preds)]) == 0
    assert "accuracy 0.9" in capsys.readouterr().err
    # values (N, T, O), and time-major with --layout time: the same run as the same values laid out (N, T, O)
    v = np.cumsum(x, axis=1)[:, :, [0, 0]] * [1.0, -1.0]
    np.savez(tmp_path / "vb.npz", x=x, y=v, lengths=L)
    np.savez(tmp_path / "vt.npz", x=x.transpose(1, 0, 2), y=v.transpose(1, 0, 2), lengths=L)
    for name, layout in (("vb", "batch"), ("vt", "time")):
        assert cli.main(["train", "--data", str(tmp_path / f"{name}.npz"), "--output", "every", "--layout", layout,
                         "--hidden", "8", "--epochs", "2", "--quiet", "--out", str(tmp_path / name)]) == 0
    assert np.array_equal(fastlstm.load(tmp_path / "vb").params, fastlstm.load(tmp_path / "vt").params)
    # what each mistake says
    capsys.readouterr()
    y[3, 1] = -1                                                 # a counted step's label
    np.savez(tmp_path / "neg.npz", x=x, y=y, lengths=L)
    for argv, said in ((["--data", str(tmp_path / "seq.npz")], "got shape (600, 12) dtype int64; a target per step "
                                                               "takes --output every"),
                       (["--data", str(tmp_path / "neg.npz"), "--output", "every"],
                        "class labels y are indices 0..C-1, and sequence 3 has label -1 at step 1"),
                       (["--data", str(tmp_path / "new.npz"), "--output", "every"], "no array 'y'"),
                       (["--task", "adding", "--output", "every"], "--output applies to --data arrays only")):
        assert cli.main(["train", *argv, "--quiet", "--out", str(tmp_path / "bad")]) == 2
        assert said in capsys.readouterr().err, argv
    np.savez(tmp_path / "short.npz", x=x, y=y[:, :5])
    assert cli.main(["train", "--data", str(tmp_path / "short.npz"), "--output", "every", "--quiet", "--out",
                     str(tmp_path / "bad")]) == 2
    assert ("with --output every, y holds a target per step, laid out as x: integer class labels (N, T) or float "
            "targets (N, T) or (N, T, O), with N = 600 sequences and T = 12 steps; got shape (600, 5)"
            in capsys.readouterr().err)


def test_digits_as_npz_in_time_layout(tmp_path):
    sklearn = pytest.importorskip("sklearn.datasets", reason="the digits extra")
    d = sklearn.load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, x=(d.images / 16.0).transpose(1, 0, 2), y=d.target)          # (T = 8, N, D = 8)
    out = tmp_path / "digits.ckpt"
    r = _run("train", "--data", str(path), "--layout", "time", "--epochs", "12", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    h = history(out)[-1]
    assert h["val_accuracy"] > 0.85 and h["majority"] < 0.2, h


def test_early_stopping_stops_and_the_best_checkpoint_is_the_best_score(files, tmp_path):
    out = tmp_path / "es.ckpt"
    r = _run("train", "--data", str(files["arrays"]), "--epochs", "200", "--lr", "0.05", "--eval-every", "5",
             "--patience", "3", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "stopped early: no better val_loss in 3 evaluations" in r.stdout, r.stdout
    h = history(out)
    assert fastlstm.load(out).steps < 200 * 18 and len(h) >= 4
    assert all(row["val_loss"] >= min(r0["val_loss"] for r0 in h[:-3]) for row in h[-3:])
    best = fastlstm.load(tmp_path / "es.best.ckpt")
    assert best.steps == min(h, key=lambda row: row["val_loss"])["step"]
    again = data.from_spec(best.extra["data"]).metrics(best)
    assert again["val_loss"] == min(row["val_loss"] for row in h)
    log = (tmp_path / "es.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,seconds,train_loss,lr,val_loss,val_accuracy,majority")
    assert len(log) == len(h) + 1


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_ctrl_c_then_resume_is_bitwise_with_schedule_early_stopping_and_data_order(files, tmp_path, schedule):
    args = ["--data", str(files["series"]), "--target", "load", "--window", "24", "--hidden", "16", "--epochs",
            "60", "--eval-every", "25", "--patience", "1000", "--schedule", schedule, "--warmup", "30",
            "--batch", "16"]
    ref = tmp_path / "ref.ckpt"
    assert _run("train", *args, "--quiet", "--out", str(ref)).returncode == 0
    out = tmp_path / "cut.ckpt"
    p = subprocess.Popen([sys.executable, "-m", "fastlstm", "train", *args, "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _read_until(p, "loss=")
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, stderr
    cut = fastlstm.load(out)
    a, b = cut.extra["run"]["batches"], fastlstm.load(ref).extra["run"]["batches"]
    assert 0 < cut.steps < fastlstm.load(ref).steps, "the signal came after the run ended"
    r = _run("train", *args, "--quiet", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    m, want = fastlstm.load(out), fastlstm.load(ref)
    assert m.steps == want.steps and np.array_equal(m.params, want.params)
    assert all(np.array_equal(m.optimizer.state[k], want.optimizer.state[k]) for k in want.optimizer.state)
    strip = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]     # noqa: E731
    assert strip(history(out)) == strip(history(ref))
    assert m.extra["run"] == want.extra["run"] and a["epoch"] <= b["epoch"]
    if schedule == "plateau":
        assert want.extra["run"]["schedule"]["scale"] < 1           # it did lower the rate on the way


BAD_CSV = "date,load,temp\n2024-01-01T00:00:00,1.0,2.0\n"


def _hourly(values, hours=None):
    """A CSV of one day's hours (in the order given) with a load column."""
    hours = range(len(values)) if hours is None else hours
    return ("date,load\n" + "".join(f"2024-01-02T{h:02d}:00:00,{v}\n" for h, v in zip(hours, values))).encode()


@pytest.mark.parametrize("name, content, argv, message", [
    ("empty.txt", b"", [], "the file is empty"),
    ("bin.txt", b"ab\x00cd", [], "not a text file (a NUL byte at line 1, column 3)"),
    ("bad.txt", "héllo\nwörld ".encode() + b"\xff!!", [], "invalid UTF-8 at line 2, column 7"),
    ("stray.txt", b"abc\x80def", [], "invalid UTF-8 at line 1, column 4 (byte 3: invalid start byte)"),  # max 128
    ("cp1252.txt", "caf\xe9 au lait".encode("cp1252"), [], "invalid UTF-8 at line 1, column 4 (byte 3: invalid "
     "continuation byte); fastlstm reads UTF-8: save the file as UTF-8 (one from Windows or a spreadsheet may be in "
     "cp1252 or Latin-1)"),
    ("cp1252.csv", "load,city\n1,K\xf6ln\n".encode("cp1252"), ["--target", "load"], "invalid UTF-8 at line 2, "
     "column 4 (byte 13: invalid start byte); fastlstm reads UTF-8: save the file as UTF-8 (a spreadsheet's \"CSV "
     "UTF-8\")"),
    ("utf16.txt", "hello\n".encode("utf-16"), [], "the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
     "fastlstm reads UTF-8: save it as UTF-8"),                  # it said "a NUL byte at line 1, column 3"
    ("empty.csv", b"", ["--target", "load"], "the file is empty"),
    ("utf16.csv", "load,temp\n1,2\n".encode("utf-16-be").join([b"\xfe\xff", b""]), ["--target", "load"],
     "the file is UTF-16 (it starts with a UTF-16 byte-order mark); fastlstm reads UTF-8: save it as UTF-8 "
     "(a spreadsheet's \"CSV UTF-8\")"),                         # Excel's "Unicode Text"; it said "NUL bytes"
    ("ragged.csv", (BAD_CSV + "2024-01-01T01:00:00,1.0\n").encode(), ["--target", "load"],
     "line 3: 2 cells, the header has 3"),
    ("onecell.csv", (BAD_CSV + "2024-01-01T01:00:00\n").encode(), ["--target", "load"],
     "line 3: 1 cell, the header has 3"),                       # it said "1 cells"
    ("text.csv", (BAD_CSV + "2024-01-01T01:00:00,1.5,2\n2024-01-01T02:00:00,abc,2\n").encode(),
     ["--target", "load"], "line 4, column 2 ('load'): 'abc' is not a number"),
    ("textfirst.csv", b"load,temp\nabc,2\n3,4\n", ["--target", "load"],
     "line 2, column 1 ('load'): 'abc' is not a number; column 'load' must be numeric"),
    ("underscore.csv", (BAD_CSV + "2024-01-01T01:00:00,1_000,2\n").encode(), ["--target", "load"],
     "line 3, column 2 ('load'): '1_000' is not a number"),
    ("script.csv", (BAD_CSV + "2024-01-01T01:00:00,1,\u0661\u0662\n").encode(), ["--target", "load"],
     "line 3, column 3 ('temp'): '\u0661\u0662' is not a number"),
    ("overflow.csv", (BAD_CSV + "2024-01-01T01:00:00,1.5,1e999\n").encode(), ["--target", "load"],
     "line 3, column 3 ('temp'): '1e999' is not a finite number"),
    ("missing.csv", (BAD_CSV + "2024-01-01T01:00:00,,2\n").encode(), ["--target", "load"],
     "line 3, column 2 ('load'): missing value (pass --fill ffill or --fill zero"),
    ("first.csv", b"a,b\n,1\n2,3\n", ["--target", "a", "--fill", "ffill"],
     "line 2, column 1 ('a'): missing value (nothing earlier to carry forward)"),
    ("nocol.csv", BAD_CSV.encode(), ["--target", "nope"],
     "--target 'nope' is not a column; the columns are: date, load, temp"),
    ("comma.csv", b'load,"temp, C"\n1,2\n3,4\n', ["--target", "temp, C"],     # it listed three columns
     "--target 'temp' is not a column; the columns are: 'load', 'temp, C' (by name, or by number from 1); a name "
     "with a comma goes by its number: 'temp, C' is 2"),
    ("twice.csv", b"load,temp,load\n1,2,3\n", ["--target", "load"],      # it gave the header alone
     "line 1: the header needs distinct, non-empty column names, and column 3 repeats column 1's name 'load' "
     "(the header: 'load', 'temp', 'load')"),
    ("unnamed.csv", b"load,,temp\n1,2,3\n", ["--target", "load"],
     "line 1: the header needs distinct, non-empty column names, and column 2 has none (the header: 'load', '', "
     "'temp')\n"),
    ("index.csv", b",load,temp\n0,2,3\n1,2,3\n", ["--target", "load"],        # pandas' to_csv, index included
     "column 1 has none (the header: '', 'load', 'temp'): a row index, as pandas' DataFrame.to_csv writes one; save "
     "with index=False, or name the column"),
    ("trailing.csv", b"load;temp;\n1;2;\n3;4;\n", ["--target", "load", "--sep", ";"],   # every line ends in ';'
     "column 3 has none (the header: 'load', 'temp', ''): the header ends with ';'; if every line does, remove the "
     "last ';' from each"),
    ("unclosed.csv", BAD_CSV.encode() + b'2024-01-01T01:00:00,"1.5,2\n2024-01-01T02:00:00,1,2\n',
     ["--target", "load"], "line 3: a quoted cell opened on this line is never closed"),
    ("linebreak.csv", BAD_CSV.encode() + b'2024-01-01T01:00:00,"1.5\n2",2\n2024-01-01T02:00:00,1,2\n',
     ["--target", "load"], "line 3, column 2 ('load'): '1.5\\n2' (one quoted cell over 2 lines: a quote left open?) "
                           "is not a number"),                     # the line the record starts on
    # a stray quote closed 20 lines on: the message quoted all 22 lines of the one cell it made
    ("strayquote.csv", BAD_CSV.encode() + b'2024-01-01T01:00:00,"1.5,2\n' + b"".join(
        b"2024-01-01T%02d:00:00,1,2\n" % h for h in range(2, 22)) + b'2024-01-01T22:00:00,1",2\n', ["--target", "load"],
     "line 3, column 2 ('load'): '1.5,2\\n2024-01-01T02:00:00,1,2\\n2024-01-01T03:00:00,1,2\\n20… (one quoted cell "
     "over 22 lines: a quote left open?) is not a number"),
    ("headerquote.csv", b'date,"load,temp\n' + b"".join(b"2024-01-01T%02d:00:00,1,2\n" % h for h in range(20))
     + b'2024-01-01T20:00:00,1",2\n2024-01-01T21:00:00,1,2\n', ["--target", "load"],   # the header took 21 lines
     "--target 'load' is not a column; the columns are: 'date', 'load,temp\\n2024-01-01T00:00:00,1,2\\n"
     "2024-01-01T01:00:00,1,2… (one quoted cell over 22 lines: a quote left open?), '2' (by name"),
    ("linebreak_ragged.csv", BAD_CSV.encode() + b'2024-01-01T01:00:00,"a\nb"\n', ["--target", "load"],
     "line 3: 2 cells, the header has 3"),                     # it gave each the record's last line
    ("afterquote.csv", BAD_CSV.encode() + b'2024-01-01T01:00:00,"1.5"0,2\n', ["--target", "load"],
     "line 3: ',' expected after '\"'"),
    ("semicolon.csv", b"load;temp\n1;2\n3;4\n", ["--target", "load"],
     "the columns are: load;temp (by name, or by number from 1); the header looks ';'-separated"),
    ("cased.csv", b"Load,temp\n1,2\n3,4\n", ["--target", "load"], "--target 'load' is not a column; the columns are: "
     "Load, temp (by name, or by number from 1); 'Load' differs from it in case alone (names match exactly)"),
    ("comma.csv", b"load,temp\n1,2\n3,4\n", ["--target", "load", "--sep", ";"],      # the other way round: it said
     "the columns are: 'load,temp' (by name, or by number from 1); the header looks ','-separated, and the cells "   # a
     "were split at ';': pass --sep ','"),                                  # name with a comma goes by its number
    ("decimal_comma.csv", b"load;temp\n1,5;2\n3,25;4\n", ["--target", "load"],
     "line 2: 2 cells, the header has 1; the header looks ';'-separated, and the cells were split at ',': pass "
     "--sep ';' (and --decimal , for decimal commas)"),
    ("decimal_only.csv", b"load;temp\n1,5;2\n3,25;4\n", ["--target", "load", "--sep", ";"],
     "line 2, column 1 ('load'): '1,5' is not a number (a decimal comma: pass --decimal ,)"),
    ("us_thousands.csv", b"load;temp\n1,500.5;2\n3,250.25;4\n", ["--target", "load", "--sep", ";"],
     "line 2, column 1 ('load'): '1,500.5' is not a number (a thousands separator ',': write the column without "
     "them)"),
    ("eu_thousands.csv", b"load;temp\n1.500,5;2\n3.250,25;4\n", ["--target", "load", "--sep", ";", "--decimal", ","],
     "line 2, column 1 ('load'): '1.500,5' is not a number (a thousands separator '.': write the column without "
     "them)"),
    ("thousands.csv", b'load,temp\n"1,500",2\n"3,250",4\n', ["--target", "load"],     # --decimal , would be refused
     "line 2, column 1 ('load'): '1,500' is not a number (a comma in a number: write the column without thousands "
     "separators, or, for decimal commas, the file ';'-separated with --sep ';' --decimal ,)"),

    ("short.csv", (BAD_CSV * 1).encode() + b"".join(f"2024-01-02T{i:02d}:00:00,{i},1\n".encode() for i in range(20)),
     ["--target", "load", "--window", "15", "--horizon", "3"], "window + horizon = 18 rows, longer than the training part"),
    ("far.csv", _hourly([1e300 if i == 20 else i % 3 for i in range(24)]), ["--target", "load", "--window", "3"],
     "line 22, column 2 ('load'): 1e+300 is too large for the column's scale (the training rows' mean 0.947, "
     "standard deviation 0.825)"),
    ("overflow_mean.csv", _hourly([1.5e308 if i in (2, 3) else 1 for i in range(24)]),
     ["--target", "load", "--window", "3"], "line 4, column 2 ('load'): 1.5e+308 is too large for the column's scale "
     "(the training rows' mean inf, standard deviation inf)"),
    ("newest_first.csv", _hourly(range(24), hours=range(23, -1, -1)), ["--target", "load", "--window", "3"],
     "line 3, column 1 ('date'): '2024-01-02T22:00:00' goes back in time from line 2's '2024-01-02T23:00:00': "
     "sort the rows oldest first"),
    ("shuffled.csv", _hourly(range(24), hours=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20, 21, 22, 23, 12, 13, 14, 15,
                                               16, 17, 18, 19]), ["--target", "load", "--window", "3"],
     "line 18, column 1 ('date'): '2024-01-02T12:00:00' goes back in time from line 17's '2024-01-02T23:00:00'"),
    ("bigx.npz", None, [], "x holds 1e+300 at (n, t, d) = (3, 1, 0), beyond float32's range"),   # as the file holds it
    ("oneclass.npz", None, [], "y's class labels are all 0, one class: a classifier needs two or more (labels "
     "0..C-1), or float targets for regression"),           # it trained a model of one class, at a loss of 0
    ("bigy.npz", None, [], "y holds 1e+300 at (n, o) = (9, 0), beyond float32's range"),
    ("noy.npz", None, [], "no array 'y' (the file holds: x)"),
    ("nox.npz", None, [], "no array 'x' (the file holds: y)"),
    ("booly.npz", None, [], "y must be integer class labels (N,) or float targets (N,) or (N, O) for N = 10 "
     "sequences, got shape (10,) dtype bool; for booleans as labels 0 and 1 pass y.astype(np.int64)"),
    ("shape.npz", None, [], "y must be integer class labels (N,) or float targets"),
    ("scalar.npz", None, [], "x must be a numeric array (N, T, D), or (T, N, D) with --layout time, got shape () "
     "dtype float32"),
    ("lengths.npz", None, [], "lengths must be integers of shape (10,)"),
    ("range.npz", None, [], "lengths must lie in 1..5"),
    ("ids.npz", None, [], "class labels y must lie in 0..1048575 (class indices 0..C-1), got min 0, max 1099511627776"),
    ("wrap.npz", None, [], "class labels y must lie in 0..1048575 (class indices 0..C-1), got min 0, max 18446744073709551615"),
    ("negative.npz", None, [], "class labels y are indices 0..C-1, and sequence 3 has label -1"),
    ("typo.npz", None, [], "an array 'lenghts' and no 'lengths': did you mean 'lengths'? (an .npz holds x, y and "
     "optionally lengths"),                                      # it trained on the padding, lengths unread
    ("tiny.txt", b"a", [], "too short: of its 1 character, 1 would go to training and 0 be held out; each part "
     "needs at least T + 1 = 101"),
    ("ragged.npz", None, [], "array 'x' holds Python objects (np.savez saves a list of arrays of different shapes "
     "so), which fastlstm does not unpickle: pad the sequences to one length T and give their lengths as 'lengths'"),
    ("objecty.npz", None, [], "array 'y' holds Python objects (np.savez saves a list of arrays of different shapes "
     "so), which fastlstm does not unpickle: save it as a numeric array"),
    ("junk.npz", b"not a zip", [], "not an .npz file (a zip archive of arrays, as np.savez writes)"),
    ("timemajor.npz", None, [], "got shape (10,) dtype int64; y has a row for each of x's T = 10 steps: an x saved "
     "as (T, N, D) takes --layout time"),
    ("one.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + b" " * 53
     + b"\n" + bytes(8), ["--kind", "arrays"], "a .npy file holds one array; arrays come as an .npz of x and y"),
    ("one.npz", None, [], "1 sequence cannot be split into training and validation parts at --val-fraction 0.2 "
     "(it holds out 0); each part needs at least one"),
    ("archive.csv", None, ["--target", "load"], "not a CSV file (it is a zip archive, such as a .npz)"),
    ("nul.csv", (BAD_CSV + "2024-01-01T01:00:00,1.\0,2\n").encode(), ["--target", "load"],
     "not a CSV file (a NUL byte at line 3, column 23)"),        # it said "it holds NUL bytes", not where
    ("nul0.csv", b"\0" + BAD_CSV.encode(), ["--target", "load"], "not a CSV file (a NUL byte at line 1, column 1)"),
    ("badtime.csv", (BAD_CSV + "2024-01-01T01:00,1,2\n2024-01-01T25:00,1,2\n").encode(), ["--target", "load"],
     "line 4, column 1 ('date'): '2024-01-01T25:00' is not a date or time"),      # the column's name was left out
    ("notime.csv", (BAD_CSV + "NA,1,2\n2024-01-01T02:00,1,2\n").encode(), ["--target", "load", "--fill", "ffill"],
     "line 3, column 1 ('date'): a missing time: every row needs its time (--fill fills numbers)"),   # "'NA' is not
    ("nostart.csv", b"date,start,load\n" + b"".join(                                               # a date or time"
        f"2024-01-01T{h:02d}:00,{'' if h == 5 else f'2024-01-01T{h:02d}:00'},{h}\n".encode() for h in range(12)),
     ["--target", "load", "--features", "start,load"], "line 7, column 2 ('start'): a missing time"),  # a time feature
    ("mixedzone.csv", (BAD_CSV + "2024-01-01T02:00:00+01:00,1,2\n").encode(), ["--target", "load"],
     "line 3, column 1 ('date'): '2024-01-01T02:00:00+01:00' has a UTC offset, and line 2's '2024-01-01T00:00:00' "
     "none: give every time of a column an offset, or none"),          # it read the naive times as UTC, silently
    ("mixedzone2.csv", b"date,load\n2024-01-01T00:00Z,1\n2024-01-01T01:00,1\n", ["--target", "load"],
     "line 3, column 1 ('date'): '2024-01-01T01:00' has no UTC offset, and line 2's '2024-01-01T00:00Z' has one"),
    ("folder.txt", "folder", [], "a folder, not a file"),
    ("keep.csv", BAD_CSV.encode(), ["--target", "load"], "would write over the data"),
    ("season.csv", _hourly(range(24)), ["--target", "load", "--window", "3", "--season", "20"],
     "--season 20 is longer than the training part (19 of 24 rows)"),   # it reported seasonal_skill 0.0000
    ("twice.csv", BAD_CSV.encode(), ["--target", "load,2"], "--target names column 'load' twice"),
    ("features_twice.csv", BAD_CSV.encode(), ["--target", "load", "--features", "temp,load,temp"],
     "--features names column 'temp' twice"),
    ("no_features.csv", BAD_CSV.encode(), ["--target", "load", "--features", ","], "--features names no column"),
    ("header_only.csv", b"date,load,temp\n", ["--target", "load"], "no data rows under the header"),
    ("short_validation.csv", _hourly(range(24)), ["--target", "load", "--window", "3", "--horizon", "6"],
     "the validation part (5 rows) is shorter than the horizon (6); raise --val-fraction"),
    ("empty.npz", None, [], "x has an empty dimension: (T, N, D) = (0, 10, 2)"),
    ("hanzi.txt", "".join(chr(c) for c in range(0x4E00, 0x4E00 + 70000) if not 0xD800 <= c < 0xE000).encode() * 2,
     [], "67952 distinct characters; a character model takes at most 65535"),
    ("book.xlsx", b"PK\x03\x04\x14\x00\x06\x00", [], "book.xlsx: a spreadsheet workbook, which fastlstm does not "
     "read: save the sheet as CSV (Save As, CSV UTF-8)"),     # read as text: a NUL byte, and "pass --kind series"
    ("x.npy", b"\x93NUMPY\x01\x00", [], "x.npy: a .npy file holds one array; arrays come as an .npz of x and y"),
])
def test_bad_data_is_a_clear_error_and_no_checkpoint_is_overwritten(tmp_path, capsys, name, content, argv, message):
    path = tmp_path / name
    x = np.zeros((10, 5, 2), np.float32)
    arrays = {"noy.npz": dict(x=x), "nox.npz": dict(y=np.zeros(10, np.int64)),
              "booly.npz": dict(x=x, y=np.zeros(10, bool)), "scalar.npz": dict(x=np.float32(3), y=np.zeros(10, np.int64)), "shape.npz": dict(x=x, y=np.zeros((10, 2), np.int64)),
              "lengths.npz": dict(x=x, y=np.zeros(10, np.int64), lengths=np.ones(10)),
              "range.npz": dict(x=x, y=np.zeros(10, np.int64), lengths=np.full(10, 6)),
              "ids.npz": dict(x=x, y=np.array([0] * 9 + [1 << 40])),    # ids where labels belong: 2^40 + 1 classes
              "wrap.npz": dict(x=x, y=np.array([0] * 9 + [2**64 - 1], np.uint64)),      # -1 once cast to int64
              "negative.npz": dict(x=x, y=np.array([0, 1, 0, -1, 1, 0, -1, 0, 1, 0])),   # -1 for "no label"
              "typo.npz": dict(x=x, y=np.zeros(10, np.int64), lenghts=np.full(10, 3)),
              "bigx.npz": dict(x=np.where(np.arange(100).reshape(10, 5, 2) == 32, 1e300, 0.0),  # inf in float32,
                               y=np.arange(10) % 2),                                         # at x[3, 1, 0]
              "oneclass.npz": dict(x=x, y=np.zeros(10, np.int64)),
              "bigy.npz": dict(x=x, y=np.r_[np.zeros(9), 1e300]), "archive.csv": dict(x=x),
              "one.npz": dict(x=x[:1], y=np.zeros(1, np.int64)),
              "empty.npz": dict(x=np.zeros((10, 0, 2), np.float32), y=np.zeros(10, np.int64)),
              "timemajor.npz": dict(x=x.transpose(1, 0, 2).copy(), y=np.zeros(10, np.int64)),   # (T, N, D)
              "ragged.npz": dict(x=np.array([x[0], x[1, :3]], dtype=object), y=np.zeros(2, np.int64)),
              "objecty.npz": dict(x=x, y=np.array([np.zeros(2), np.zeros(3)] * 5, dtype=object))}
    if content is None:
        with open(path, "wb") as f:                              # the name as given (archive.csv: no .npz added)
            np.savez(f, **arrays[name])
    elif content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    out = tmp_path / "keep.ckpt"
    fastlstm.Model(2, 3, 1).save(out)
    before = out.read_bytes()
    # --overwrite: even a run allowed to start afresh over the checkpoint leaves it alone when the data are bad
    assert cli.main(["train", "--data", str(path), *argv, "--out", str(out), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastlstm: error: ") and str(path) in err and message in err, err
    assert out.read_bytes() == before and (content in (None, "folder") or path.read_bytes() == content)


def test_data_on_standard_input_or_a_pipe_is_refused_with_what_to_do(tmp_path, capsys):
    """`cat notes.txt | fastlstm train --data -` said only "-: no such file", and a FIFO
    "not a regular file"; both now say to save the data to a file (a run reads it more
    than once). The FIFO, which has no writer, is not waited on."""
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    for given, said in (("-", "-: standard input is not read"), (str(fifo), "pipe.txt: not a regular file (a pipe")):
        assert cli.main(["train", "--data", given, "--quiet", "--out", str(tmp_path / "x.ckpt")]) == 2
        err = capsys.readouterr().err
        assert said in err and "fastlstm reads data from a file (more than once" in err, err


def test_a_damaged_npz_is_a_data_error_whatever_the_damage(tmp_path):
    """A cut or corrupted archive used to escape as BadZipFile, tokenize's TokenError (NumPy
    parses each member's header) or NotImplementedError: a traceback. 200 damaged copies, of
    a stored and of a compressed archive, must each be refused by name, or read whole, and
    leave no file open (NumPy's np.load(path) left its own open when the zip was damaged)."""
    rng = np.random.default_rng(0)
    arrays = dict(x=rng.standard_normal((20, 6, 3)).astype(np.float32), y=rng.integers(0, 3, 20))
    path = tmp_path / "d.npz"
    for save in (np.savez, np.savez_compressed):
        with open(path, "wb") as f:
            save(f, **arrays)
        good, read = path.read_bytes(), 0
        with warnings.catch_warnings(record=True) as left_open:
            warnings.simplefilter("always", ResourceWarning)
            for _ in range(100):
                b = bytearray(good)
                for j in rng.integers(0, len(b), rng.integers(1, 6)):
                    b[j] = rng.integers(0, 256)
                path.write_bytes(bytes(b[:rng.integers(4, len(b))] if rng.random() < 0.2 else b))
                try:
                    data.open_data(str(path))
                    read += 1
                except data.DataError as e:
                    assert str(path) in str(e)
            gc.collect()
        assert read < 10                                      # the damage was real
        assert not [str(w.message) for w in left_open if w.category is ResourceWarning]


def test_resume_refuses_data_that_changed(files, tmp_path, capsys):
    data_file, out = tmp_path / "load.csv", tmp_path / "run.ckpt"
    data_file.write_bytes(files["series"].read_bytes())
    args = ["train", "--data", str(data_file), "--target", "load", "--window", "24", "--steps", "3", "--quiet",
            "--out", str(out)]
    assert cli.main(args) == 0
    before = out.read_bytes()
    with open(data_file, "a") as f:
        f.write("2024-03-01T00:00:00,1.0,2.0\n")
    assert cli.main([*args[:-5], "--steps", "6", "--resume", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not the file this checkpoint was trained on" in err and out.read_bytes() == before, err
    assert cli.main(["train", "--task", "adding", "--resume", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} was trained on --data {data_file}, not a built-in task" in err and out.read_bytes() == before, err


def test_semicolons_and_decimal_commas_or_tabs_read_as_the_plain_csv(files, tmp_path, capsys):
    """--sep ';' --decimal , (a European spreadsheet's export) and --sep tab read the same
    numbers as the comma-separated file: the same run, bit for bit, and predict reads the
    file as the checkpoint recorded and writes in its dialect. Quoted cells (the csv module's path) read alike."""
    src = files["series"].read_text()
    (tmp_path / "semi.csv").write_text(src.replace(",", ";").replace(".", ","))
    (tmp_path / "tabs.tsv").write_text(src.replace(",", "\t"))
    lines = src.split("\n")                   # a quoted cell on each row: the csv module's reader
    (tmp_path / "quoted.csv").write_text("\n".join([lines[0].replace(",", ";")] + [f'"{c.split(";")[0]}";' + ";".join(
        c.split(";")[1:]) for c in (line.replace(",", ";").replace(".", ",") for line in lines[1:] if line)]) + "\n")
    common = ["--target", "load", "--window", "24", "--epochs", "2", "--hidden", "8", "--quiet"]
    runs = {"plain": [str(files["series"])], "semi": [str(tmp_path / "semi.csv"), "--sep", ";", "--decimal", ","],
            "tabs": [str(tmp_path / "tabs.tsv"), "--kind", "series", "--sep", "tab"],
            "tsv": [str(tmp_path / "tabs.tsv")],                                  # a .tsv: a series, tab-separated
            "quoted": [str(tmp_path / "quoted.csv"), "--sep", ";", "--decimal", ","]}
    for name, argv in runs.items():
        assert cli.main(["train", "--data", *argv, *common, "--out", str(tmp_path / "runs" / name)]) == 0, name
    params = [fastlstm.load(tmp_path / "runs" / name).params for name in runs]
    assert all(np.array_equal(params[0], p) for p in params[1:])
    for name in ("plain", "semi", "tsv"):
        for k, more in enumerate(([], ["--backtest"])):
            assert cli.main(["predict", str(tmp_path / "runs" / name), "--data", runs[name][0], *more, "--out",
                             str(tmp_path / f"{name}{k}.out")]) == 0
    for k in (0, 1):                         # predictions in the data's own dialect, to open where it opens
        plain = (tmp_path / f"plain{k}.out").read_text()
        assert "." in plain and (tmp_path / f"tsv{k}.out").read_text() == plain.replace(",", "\t")
        assert (tmp_path / f"semi{k}.out").read_text() == plain.replace(",", ";").replace(".", ",")
    capsys.readouterr()                      # --resume compares the separator read, a .tsv's tab as typed
    assert cli.main(["train", "--data", *runs["tsv"], *common, "--out", str(tmp_path / "runs" / "tsv"), "--resume",
                     "--sep", "tab"]) == 0
    assert cli.main(["train", "--data", *runs["tsv"], *common, "--out", str(tmp_path / "runs" / "tsv"), "--resume",
                     "--sep", ";"]) == 2
    assert "differ from it: --sep ; (the run's: tab)." in capsys.readouterr().err
    d = data.open_data(tmp_path / "semi.csv", kind="series", target="load", sep=";", decimal=",")
    assert d.spec()["settings"]["sep"] == ";" and d.columns == ["load", "temp"]
    for settings, said in ((dict(sep="ab"), "--sep must be one character that no number holds, such as ',', ';', "
                                            "'|' or 'tab', got 'ab'"),
                           (dict(sep="."), "got '.'"), (dict(sep=1), "got 1"),
                           (dict(decimal=","), "--decimal ',' is the separator too"),
                           (dict(sep=";", decimal="·"), "--decimal must be '.' or ',', got '·'")):
        with pytest.raises(data.DataError, match=re.escape(said)):
            data.open_data(files["series"], kind="series", target="load", **settings)


def test_missing_values_filled_when_asked(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("t,a,b\n1,1.0,5\n2,,6\n3,3.0,\n4,4.0,8\n")
    s = data.Series(str(path), target="a", window=1, horizon=1, val_fraction=0.25, fill="ffill")
    assert s.values.tolist() == [[1, 1, 5], [2, 1, 6], [3, 3, 6], [4, 4, 8]]   # t is a number column here
    s = data.Series(str(path), target="a", features="b", window=1, horizon=1, val_fraction=0.25, fill="zero")
    assert s.values.tolist() == [[5, 1], [6, 0], [0, 3], [8, 4]] and s.features == ["b"]


def test_a_backtests_seasonal_skill_compares_both_forecasts_over_the_same_windows(files):
    """A backtest's windows of the first season have no seasonal naive forecast; the
    seasonal skill used to set the model's RMSE over every window against the seasonal
    RMSE over the later ones."""
    s = data.Series(str(files["series"]), target="load", window=12, horizon=2, season=24)
    model = fastlstm.Model(s.input_size, 8, s.output_size, seed=0)
    origins = np.arange(0, 200)
    m = s.scores(model, origins)
    pred, true = s.forecast(model, origins), s.actual(origins)
    later = origins[origins + 12 - 24 >= 0]                      # origin + window + k - season >= 0 at k = 0
    load = s.values[:, s.columns.index("load")]
    seasonal = np.stack([load[later + 12 + k - 24] for k in range(2)], axis=1)[:, :, None]
    rmse = lambda a, b: np.sqrt(np.mean((a - b) ** 2))          # noqa: E731
    assert len(later) == 188 and m["seasonal_rmse"] == pytest.approx(rmse(seasonal, true[later]), rel=1e-12)
    assert m["seasonal_skill"] == pytest.approx(1 - rmse(pred[later], true[later]) / m["seasonal_rmse"], rel=1e-12)
    assert m["val_rmse"] == pytest.approx(rmse(pred, true), rel=1e-12)      # the model's own RMSE: every window


def test_a_column_read_at_once_equals_the_cell_by_cell_reading(tmp_path):
    """Plain files are split by str methods and converted a column at a time (NumPy), quoted
    ones and those with blank lines go through the csv module and row by row: every way gives
    float(cell) and datetime.timestamp() to the bit, and each row its line in the file."""
    import csv
    rng = np.random.default_rng(0)
    n = 500
    t0 = [dt.datetime(1900, 3, 1, 0, 0, 0, 250000), dt.datetime(2200, 1, 1, 23, 59, 59, 999999)]
    times = [[(t + dt.timedelta(seconds=int(k) * 3607, microseconds=int(u))).isoformat(sep=s)
              for k, u in zip(range(n), rng.integers(0, 10**6, n))] for t, s in zip(t0, "T ")]
    times[1] = [c[:19] if i % 3 else c for i, c in enumerate(times[1])]        # some without microseconds
    # the basic form: fromisoformat reads it (3.11's, backported on 3.10), NumPy does not ('20240101' as a year)
    basic = [f"{(dt.datetime(2024, 1, 1) + dt.timedelta(hours=i)):%Y%m%dT%H%M}" for i in range(n)]
    nums = [[f"{v:.{int(p)}g}" for v, p in zip(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n),
                                                 rng.integers(1, 18, n))] for _ in range(2)]
    cols = {"time": times[0], "stamp": times[1], "day": basic, "a": nums[0], "b": nums[1]}
    names = list(cols)
    rows = list(zip(*cols.values()))
    plain, quoted, blank = tmp_path / "plain.csv", tmp_path / "quoted.csv", tmp_path / "blank.csv"
    plain.write_text(",".join(names) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    with open(quoted, "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows([names, *rows])
    blank.write_text(",".join(names) + "\n" + "".join(",".join(r) + "\n" + "\n" * (i == 7) for i, r in enumerate(rows)))
    read = [data.Series(str(p), target="a", features="stamp,day,a,b", window=5, val_fraction=0.2)
            for p in (plain, quoted, blank)]
    want = np.column_stack([[data._time(c)[0] for c in cols[k]] for k in ("stamp", "day")]
                           + [[float(c) for c in cols[k]] for k in ("a", "b")])
    want_times = np.array([data._time(c)[0] for c in cols["time"]])
    for s in read:
        assert s.values.view(np.int64).tolist() == want.view(np.int64).tolist()
        assert s.times.view(np.int64).tolist() == want_times.view(np.int64).tolist()
    assert read[0].lines.tolist() == read[1].lines.tolist() == list(range(2, n + 2))
    assert read[2].lines.tolist() == list(range(2, 10)) + list(range(11, n + 3))


@pytest.mark.parametrize("block", [7, data.CSV_BLOCK])
def test_a_plain_csv_read_in_blocks_equals_the_row_by_row_reading(tmp_path, monkeypatch, block):
    """A plain file's columns are converted CSV_BLOCK lines at a time and kept as numbers
    while they are numbers: a missing value or a word in a later block sends its column back
    to the cells of every block, and the values, the filled gaps and the first bad cell's
    place are those of the row-by-row reading (quoted cells take that path)."""
    monkeypatch.setattr(data, "CSV_BLOCK", block)
    rng = np.random.default_rng(1)
    n = 100
    a, b, c = ([f"{v:.6g}" for v in rng.standard_normal(n)] for _ in range(3))
    b[60] = b[61] = ""                                   # gaps in a later block
    c[90] = "n/a" if block == 7 else c[90]
    rows = [f"{i},{x},{y},{z}" for i, (x, y, z) in enumerate(zip(a, b, c))]
    plain, quoted = tmp_path / "plain.csv", tmp_path / "quoted.csv"
    plain.write_text("step,a,b,c\n" + "\n".join(rows) + "\n")
    quoted.write_text('"step",a,b,c\n' + "\n".join(rows) + "\n")
    got, want = (data.Series(str(p), target="a", features="a,b,c", window=3, fill="ffill") for p in (plain, quoted))
    assert np.array_equal(got.values, want.values) and got.lines.tolist() == want.lines.tolist()
    assert got.values[61, 1] == float(b[59])                             # carried forward
    plain.write_text("step,a,b,c\n" + "\n".join(rows[:80] + ["80,1,2,abc"] + rows[81:]) + "\n")
    with pytest.raises(data.DataError, match=r"line 82, column 4 \('c'\): 'abc' is not a number"):
        data.Series(str(plain), target="a", features="a,b,c", window=3, fill="ffill")


def test_text_is_decoded_in_pieces_that_never_split_a_character(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHUNK", 7)
    text = "ünïcödé → ∑ 日本語 text\nline two: ça va? 🙂\n" * 40
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    t = data.Text(str(path), T=8, val_fraction=0.1)
    assert "".join(t.vocab[k] for k in t.ids) == text and t.ids.dtype == np.uint8
    lines = text.encode().split(b"\n")
    path.write_bytes(b"\n".join(lines[:5]) + "\nçà".encode() + b"\xc3(" + text.encode())
    with pytest.raises(data.DataError, match=r"invalid UTF-8 at line 6, column 3 "):
        data.Text(str(path), T=8)


@pytest.mark.parametrize("chunk", [7, data.CHUNK])
def test_a_utf8_byte_order_mark_is_not_read_as_a_character(tmp_path, monkeypatch, chunk):
    """Notepad starts a UTF-8 file with EF BB BF; it became U+FEFF, a character of the
    vocabulary that the model learnt to predict at the start of the file."""
    monkeypatch.setattr(data, "CHUNK", chunk)
    text = "ünïcödé → ∑ text\nline two\n" * 40
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text(text, encoding="utf-8")
    marked.write_text(text, encoding="utf-8-sig")
    assert marked.read_bytes()[:3] == b"\xef\xbb\xbf"
    a, b = data.Text(str(plain), T=8), data.Text(str(marked), T=8)
    assert a.vocab == b.vocab and "\ufeff" not in b.vocab and np.array_equal(a.ids, b.ids)
    marked.write_bytes(b"\xef\xbb\xbfab\x00")
    with pytest.raises(data.DataError, match=r"a NUL byte at line 1, column 3\)"):   # columns as an editor shows them
        data.Text(str(marked), T=1)


def test_a_run_is_given_its_end_in_steps_or_epochs_and_a_task_has_no_epochs():
    """Run's own guard, under fit (always epochs) and the command line (which refuses both earlier)."""
    from fastlstm import tasks
    m, task = fastlstm.Model(2, 4, 1, seed=0), tasks.TASKS["adding"](T=5)
    for kw, said in (({}, "give steps or epochs"), ({"epochs": 1}, "epochs need finite data")):
        with pytest.raises(ValueError, match=said):
            training.Run(m, task, 4, np.random.default_rng(0), **kw)
    assert training.Run(m, task, 4, np.random.default_rng(0), steps=3).total == 3


def test_batches_visit_every_example_once_an_epoch_and_resume_mid_epoch():
    class Finite:
        size = 10
        def take(self, index, dtype):
            return index.copy(), None, None
    rng = np.random.default_rng(5)
    b = training.Batches(Finite(), 3, rng)
    epoch = np.concatenate([b.next(None)[0] for _ in range(3)])
    assert len(set(epoch)) == 9 and b.epoch == 1 and b.pos == 0
    b.next(None)
    state = b.state()
    rest = [b.next(None)[0] for _ in range(4)]
    again = training.Batches(Finite(), 3, np.random.default_rng(0))
    again.load_state(state)
    assert all(np.array_equal(u, w) for u, w in zip(rest, [again.next(None)[0] for _ in range(4)]))


def test_schedules():
    s = training.Schedule("cosine", warmup=10)
    s.start(1.0, 110)
    assert s.lr(0) == pytest.approx(0.1) and s.lr(9) == pytest.approx(1.0) and s.lr(109) == pytest.approx(1e-3)
    assert s.lr(60) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * 50 / 99)))
    p = training.Schedule("plateau")
    p.start(0.1, 100)
    for improved in (True, False, False, True, False):
        p.observe(improved)
    assert p.lr(50) == pytest.approx(0.05)
    p.observe(False)                               # one bad evaluation on: a second run (a second fit given
    p.start(0.2, 100)                              # this Schedule) went on at the halved rate, 0.1 here
    assert p.lr(0) == 0.2 and p.bad == 0
    with pytest.raises(ValueError, match="schedule must be one of"):
        training.Schedule("step")
    # min_scale=0 (PyTorch's eta_min) was taken, and a cosine fit failed at its last step, on a rate of 0
    with pytest.raises(ValueError, match=r"min_scale must be > 0 \(the optimizers take a learning rate > 0\), got 0"):
        training.Schedule("cosine", min_scale=0)


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_the_plateau_schedule_is_keras_reduce_lr_on_plateau_and_pytorchs_with_one_less_patience(patience):
    """The docs called "plateau" PyTorch's ReduceLROnPlateau with patience 2, which halves
    after the third evaluation without a new best, where "plateau" halves after the second:
    Keras's patience (its min_delta 0) is PyTorch's patience + 1 (its threshold 0)."""
    torch = pytest.importorskip("torch")
    metric = np.random.default_rng(patience).random(60)
    mine = training.Schedule("plateau", patience=patience, min_scale=1e-3)
    mine.start(1.0, 100)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=patience - 1, threshold=0.0,
                                                        min_lr=1e-3)
    best, rates = None, []
    for x in metric:
        improved = best is None or x < best
        best = x if improved else best
        mine.observe(improved)
        theirs.step(float(x))
        rates.append((mine.lr(50), opt.param_groups[0]["lr"]))
    assert all(a == b for a, b in rates) and rates[-1][0] < 0.5, rates


def test_early_stopping_counts_a_tie_as_no_better_and_stops_after_patience_evaluations():
    """As Keras's EarlyStopping (min_delta 0): a value equal to the best is no new best, and
    the run stops at the patience-th evaluation in a row without one."""
    for mode, values in (("min", [3.0, 2.0, 2.0, 2.5]), ("max", [1.0, 2.0, 2.0, 1.5])):
        s = training.EarlyStopping(("m", mode), patience=2)
        said = [(s.update({"m": x}, 10 * k), s.stop) for k, x in enumerate(values)]
        assert said == [(True, False), (True, False), (False, False), (False, True)], (mode, said)
        assert (s.best, s.best_step) == (2.0, 10)
    never = training.EarlyStopping(("m", "min"))
    assert [never.update({"m": 1.0}, k) or never.stop for k in range(5)] == [True] + [False] * 4


def test_the_progress_bars_rate_leaves_out_the_first_step():
    """The bar's sequences a second divided every sequence by the time since the start,
    the first step's compile and the evaluations included: a cold text run showed 52 where
    its steps ran at about 650. Now a moving average of the steps' own rates from the
    second step on (the caller times each step alone, so evaluations never enter)."""
    speed = training.Throughput()
    speed.add(32, 30.0)                            # the first step: compiling, left out
    assert speed.rate is None
    speed.add(32, 0.05)
    assert speed.rate == pytest.approx(640)
    for _ in range(100):
        speed.add(32, 0.1)
    assert speed.rate == pytest.approx(320, rel=1e-3)


def test_fit_reads_float32_arrays_in_place_and_other_dtypes_once():
    """Model.fit's arrays used to be copied to float64 (2x the data) and cast back to the
    model's dtype (1x more) before the first step: 3.3x a float32 x at its peak."""
    x = np.random.default_rng(0).standard_normal((50, 20000, 2), dtype=np.float32)      # 8 MB
    y = np.zeros(20000, np.int64)
    for dtype in (np.float32, np.float64):      # the first call in a process loads kernels: not the data's bytes
        data.Arrays("fit", layout="time", _arrays=(x[:, :8].astype(dtype), y[:8], None)).take(np.arange(4), dtype)
    for a, dtype, most in ((x, np.float32, 0.3), (x.astype(np.float64), np.float32, 1.4),
                           (x, np.float64, 2.4)):      # in x's float32 bytes: the one cast needed, a mask
        with traced_peak() as peak:
            d = data.Arrays("fit", layout="time", _arrays=(a, y, None))
            xb, yb, _ = d.take(np.arange(64), dtype)
        assert peak() < most * x.nbytes, (a.dtype, dtype, peak() / x.nbytes)
        assert xb.dtype == dtype and np.array_equal(xb, x[:, :64].astype(dtype)) and np.array_equal(yb, y[:64])


def test_fit_without_a_stderr_trains_without_its_bar(monkeypatch):
    """Under pythonw, a service or `2>&-`, sys.stderr is None, and fit's progress bar (on by
    default) raised AttributeError at its first write. It trains as with progress=False."""
    x = np.random.default_rng(0).standard_normal((5, 24, 2), dtype=np.float32)
    y = (x[:, :, 0].sum(axis=0) > 0).astype(np.int64)
    a, b = (fastlstm.Model(2, 4, 2, loss="xent", seed=0) for _ in range(2))
    quiet = b.fit(x, y, epochs=2, batch_size=8, seed=0, progress=False)
    monkeypatch.setattr(sys, "stderr", None)
    assert a.fit(x, y, epochs=2, batch_size=8, seed=0) == quiet and np.array_equal(a.params, b.params)


def test_fit_takes_nested_lists_for_x_as_for_y_and_refuses_ragged_ones():
    """fit converted a list y but refused a list x ("got a list"); Keras's fit takes both. A
    list gives the same run as its array, and a ragged one says how to pad it."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 8, 2)), rng.standard_normal((8, 1))
    runs = [fastlstm.Model(2, 4, 1, seed=0) for _ in range(2)]
    runs[0].fit(x, y, epochs=2, batch_size=4, seed=0, progress=False)
    runs[1].fit(x.tolist(), y.tolist(), epochs=2, batch_size=4, seed=0, progress=False,
                validation=(x.tolist(), y.tolist()))
    assert np.array_equal(runs[0].params, runs[1].params)
    before = runs[1].params.copy()
    with pytest.raises(data.DataError, match=r"^fit: x is a list of sequences of different shapes: pad them to "
                                             r"one length T as an array \(T, N, D\) and give each one's length"):
        runs[1].fit([[[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]], [[1.0]], epochs=1, progress=False)
    assert np.array_equal(runs[1].params, before)
    ids = fastlstm.Model(4, 8, 3, vocab_size=10, loss="xent", seed=0)                # token ids as lists
    assert np.isfinite(ids.fit([[1, 2, 3], [4, 5, 6]], [0, 1, 2], epochs=1, progress=False)["loss"][0])


def test_model_fit_on_arrays_with_validation_and_early_stopping():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 400, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=0) > 0).astype(np.int64)
    model = fastlstm.Model(2, 16, 2, loss="xent", optimizer=fastlstm.Adam(lr=1e-2), seed=0)
    h = model.fit(x[:, :300], y[:300], epochs=15, batch_size=32, validation=(x[:, 300:], y[300:]), seed=0,
                  progress=False)
    assert h["epoch"] == list(np.arange(1.0, 16.0)) and model.steps == 15 * 9
    assert h["val_accuracy"][-1] > 0.9 and h["loss"][-1] < h["loss"][0]
    m2 = fastlstm.Model(2, 16, 2, loss="xent", optimizer=fastlstm.Adam(lr=0.3), seed=0)
    h2 = m2.fit(x[:, :300], y[:300], epochs=100, batch_size=32, validation=(x[:, 300:], y[300:]), patience=2,
                schedule="cosine", seed=0, progress=False)
    assert len(h2["epoch"]) < 100
    # validation_split (Keras's): the last rows, held out before shuffling; the same run as validation=
    split = fastlstm.Model(2, 16, 2, loss="xent", optimizer=fastlstm.Adam(lr=1e-2), seed=0)
    assert split.fit(x, y, epochs=15, batch_size=32, validation_split=0.25, seed=0, progress=False) == h
    assert np.array_equal(split.params, model.params)
    for bad, said in ((0, "validation_split must be > 0, got 0"), (1.0, "validation_split must be < 1"),
                      ("0.2", "validation_split must be a finite number")):
        with pytest.raises((TypeError, ValueError), match=said):
            split.fit(x, y, epochs=1, validation_split=bad, progress=False)
    with pytest.raises(ValueError, match=re.escape("give validation=(x, y) or validation_split, not both")):
        split.fit(x, y, epochs=1, validation_split=0.2, validation=(x, y), progress=False)
    with pytest.raises(ValueError, match="2 sequences cannot be split into training and validation parts at "
                                         "validation_split=0.6; each part needs at least one"):
        split.fit(x[:, :2], y[:2], epochs=1, validation_split=0.6, progress=False)
    # validation targets of another width: NumPy's concatenate error ("all the input array dimensions
    # except for the concatenation axis must match exactly") came out of fit
    r = rng.standard_normal((400, 3)).astype(np.float32)
    for bf, xv, yv, got in ((False, x[:, 300:], r[300:, :2], "got x (12, 100, 2) and targets (100, 2) against x (12, "
                                                            "300, 2) and targets (300, 3)"),
                            (True, x[:, 300:].swapaxes(0, 1), r[300:, 0], "x (B, T, D) with T = 12 and D = 2")):
        m = fastlstm.Model(2, 16, 3, batch_first=bf, seed=0)
        before = m.params.copy()
        with pytest.raises(ValueError, match=re.escape(got)):
            m.fit(x[:, :300].swapaxes(0, 1) if bf else x[:, :300], r[:300], epochs=1, validation=(xv, yv),
                  progress=False)
        assert np.array_equal(m.params, before) and m.steps == 0
    assert np.array_equal(split.params, model.params)
    # fit drops out whatever the model's mode (after eval() it trained without dropout, unsaid) and keeps the mode
    fits = []
    for mode in (True, False):
        m = fastlstm.Model(2, 8, 2, 2, loss="xent", dropout=0.5, seed=0).train(mode)
        m.fit(x, y, epochs=1, seed=0, progress=False)
        fits.append(m.params)
        assert m.training is mode
    plain = fastlstm.Model(2, 8, 2, 2, loss="xent", seed=0)
    plain.fit(x, y, epochs=1, seed=0, progress=False)
    assert np.array_equal(fits[0], fits[1]) and not np.array_equal(fits[0], plain.params)
    # fit again: `epochs` more (it trained none, returning {}, or fewer, counting from step 0),
    # its own cosine from lr down again (it started from the last call's final rate)
    again = fastlstm.Model(2, 16, 2, loss="xent", optimizer=fastlstm.Adam(lr=1e-2), seed=0)
    first = again.fit(x[:, :300], y[:300], epochs=3, batch_size=32, schedule="cosine", seed=0, progress=False)
    second = again.fit(x[:, :300], y[:300], epochs=3, batch_size=32, schedule="cosine", seed=1, progress=False)
    assert first["step"] == [9, 18, 27] and second["step"] == [36, 45, 54] and again.steps == again.optimizer.t == 54
    assert first["epoch"] == second["epoch"] == [1.0, 2.0, 3.0] and first["lr"] == second["lr"]
    assert again.optimizer.lr == 1e-2 and second["loss"][-1] < first["loss"][0]
    reg = fastlstm.Model(2, 8, 1, seed=0)
    h3 = reg.fit(x, x[:, :, 0].sum(axis=0) / 4, epochs=3, progress=False)
    assert set(h3) == {"step", "epoch", "loss", "lr"}
    with pytest.raises(ValueError, match="patience .* follows the validation loss"):
        reg.fit(x, x[0, :, :1], epochs=1, patience=2)
    # a Schedule object is a name's schedule with its settings: "cosine" and Schedule("cosine") train alike
    runs = [fastlstm.Model(2, 8, 1, seed=0).fit(x, x[:, :, 0].sum(axis=0) / 4, epochs=3, schedule=s, seed=0,
                                                      progress=False)
            for s in ("cosine", training.Schedule("cosine"), training.Schedule("cosine", warmup=20))]
    assert runs[0] == runs[1] and runs[2]["lr"][0] < runs[0]["lr"][0]           # 13 steps of an epoch: warming up
    for plateau in ("plateau", training.Schedule("plateau", warmup=2)):    # it trained at a constant rate
        with pytest.raises(ValueError, match=re.escape("schedule 'plateau' (it halves the rate) follows the "
                                                       "validation loss: pass validation=(x, y) or validation_split")):
            reg.fit(x, x[0, :, :1], epochs=1, schedule=plateau)
    with pytest.raises(ValueError, match="fit: x has D = 3 inputs a step, and this model takes 2"):
        reg.fit(np.zeros((3, 4, 3)), np.zeros((4, 1)), epochs=1)
    # data and model that disagree: said how (it was "cannot fit ... y of kind xent with 3 outputs or classes",
    # and integer targets for an mse model read "must be integer class labels (N,) ... got shape (400, 1)")
    for m, arrays, said in ((model, (x, np.full(400, 2)), "fit: y's class labels reach 2 (validation included), and "
                                                            "this model has 2 classes, labels 0..1"),
                            (model, (x, y.astype(np.float32)), "fit: y holds floats (targets: loss 'mse'), and this "
                                                               "model's loss is 'xent': give integer class labels 0..1, "),
                            (model, (x, np.eye(2, dtype=np.float32)[y]), "labels 0..1 (of one-hot rows: y.argmax(-1)), "
                                                                         "or build"),       # Keras's one-hot targets
                            (reg, (x, y), "fit: y holds integers (class labels: loss 'xent'), and this model's loss is "
                                          "'mse': give float targets"),
                            (fastlstm.Model(2, 8, 3, seed=0), (x, x[0]), "fit: y has 2 targets a sequence, and this "
                                                                         "model predicts 3")):   # it failed at a step
        with pytest.raises(ValueError, match=re.escape(said)):
            m.fit(*arrays, epochs=1, progress=False)
    # bad validation arrays are named as such (they read "fit: x holds nan", sending users to the training x)
    for val, said in (((x * np.nan, y), "fit's validation: x holds nan at (t, n, d) = (0, 0, 0)"),
                      ((x, y, np.zeros(400, int)), "fit's validation: lengths must lie in 1..12"),
                      ((x, y, np.ones(3, int)), "fit's validation: lengths must be integers of shape (400,)")):
        with pytest.raises(ValueError, match=re.escape(said)):
            model.fit(x, y, epochs=1, validation=val, progress=False)
    target = x[:, :, 0].sum(axis=0) / 4                            # (N,): as fit, evaluate takes it for one output
    assert reg.evaluate(x, target) == reg.evaluate(x, target[:, None])
    before = reg.params.copy()
    for bad, err in (({"shuffle": "yes"}, "shuffle must be True or False"), ({"seed": "a"}, "seed must be an integer"),
                     ({"seed": -1}, "seed must be >= 0"), ({"schedule": "step"}, "schedule must be one of"),
                     ({"validation": 5}, r"validation must be \(x, y\) or \(x, y, lengths\), got int"),
                     ({"validation": (x,)}, "got tuple of 1 items"), ({"validation": (x, x, None, None)}, "of 4 items"),
                     ({"progress": "x"}, "progress must be True or False"),
                     # Keras's names get what fastlstm calls them (they got Python's bare TypeError)
                     ({"validation_data": (x, y)}, r"fit\(\) got an unexpected keyword argument 'validation_data': "
                                                   r"fastlstm's fit calls it validation=\(x, y\)"),
                     ({"verbose": 0}, "'verbose': fastlstm's fit shows a progress bar unless progress=False"),
                     ({"callbacks": []}, "'callbacks': fastlstm's fit takes patience= .* loop over model.train_step"),
                     ({"class_weight": {0: 1}}, "'class_weight': fastlstm weighs every class alike"),
                     ({"warmup": 10}, r"'warmup': pass schedule=fastlstm\.training\.Schedule\('cosine', warmup=N\)"),
                     ({"learning_rate": 0.1}, r"'learning_rate': the optimizer holds it: .*model\.optimizer\.lr = "),
                     ({"batchsize": 8}, "unexpected keyword argument 'batchsize'$")):
        with pytest.raises((TypeError, ValueError), match=err):
            reg.fit(x, x[:, :, 0].sum(axis=0) / 4, epochs=1, **{"progress": False, **bad})
    with pytest.raises(TypeError, match=r"fit needs targets y"):
        reg.fit(x, None, epochs=1, progress=False)
    with pytest.raises(fastlstm.data.DataError, match=r"x must be a numeric array \(T, N, D\), got a dict$"):
        reg.fit({"x": x}, x[0, :, :1], epochs=1, progress=False)          # (lists are taken, as Keras takes them)
    with pytest.raises(fastlstm.data.DataError, match=r"x must be a numeric array \(T, N, D\), got shape \(12, 400\)"):
        reg.fit(x[:, :, 0], x[0, :, :1], epochs=1, progress=False)
    assert np.array_equal(reg.params, before)


def test_model_fit_trains_a_model_with_a_target_per_step():
    """fit took only a target per sequence: an output="every" model's per-step y was refused,
    telling its user to swap x's axes. y per step is time-major as x, (T, N) labels or (T, N, O)
    values; steps past a row's length count for nothing, in the loss and in the metrics."""
    rng = np.random.default_rng(0)
    T, N = 10, 480
    x = rng.standard_normal((T, N, 2)).astype(np.float32)
    L = rng.integers(3, T + 1, N)
    delayed = np.concatenate([np.zeros((1, N)), x[:-1, :, 0]]) > 0          # the sign one step back
    labels = delayed.astype(np.int64)
    padded = np.arange(T)[:, None] >= L[None, :]
    split = [tuple(np.ascontiguousarray(a[rows] if a.ndim == 1 else a[:, rows]) for a in (x, labels, L))
             for rows in (slice(0, 400), slice(400, N))]
    model = fastlstm.Model(2, 16, 2, loss="xent", output="every", optimizer=fastlstm.Adam(lr=1e-2), seed=0)
    h = model.fit(*split[0], epochs=12, batch_size=32, validation=split[1], seed=0, progress=False)
    assert h["val_accuracy"][-1] > 0.95 and h["loss"][-1] < h["loss"][0] / 3
    r = model.evaluate(*split[1])                   # the history's metrics are over the counted steps
    assert h["val_loss"][-1] == pytest.approx(r["loss"], rel=1e-12)
    assert h["val_accuracy"][-1] == pytest.approx(r["accuracy"], rel=1e-12)
    counted = labels[:, 400:][~padded[:, 400:]]
    assert h["majority"][-1] == pytest.approx(np.mean(counted == np.bincount(labels[:, :400][~padded[:, :400]]).argmax()))
    other = np.where(padded, rng.integers(-100, 9, (T, N)), labels)        # padding's labels change nothing,
    twin = fastlstm.Model(2, 16, 2, loss="xent", output="every", optimizer=fastlstm.Adam(lr=1e-2), seed=0)
    twin.fit(x[:, :400], other[:, :400], L[:400], epochs=2, batch_size=32, seed=0, progress=False)
    again = fastlstm.Model(2, 16, 2, loss="xent", output="every", optimizer=fastlstm.Adam(lr=1e-2), seed=0)
    again.fit(*split[0], epochs=2, batch_size=32, seed=0, progress=False)
    assert np.array_equal(twin.params, again.params)   # PyTorch's ignore_index -100 and labels beyond the classes too
    # values: (T, N) for one output, or (T, N, O); RMSE, MAE and the mean's RMSE over counted steps
    values = np.stack([delayed, ~delayed], axis=-1).astype(np.float32)
    reg = fastlstm.Model(2, 16, 2, output="every", optimizer=fastlstm.Adam(lr=1e-2), seed=0)
    h = reg.fit(x[:, :400], values[:, :400], L[:400], epochs=3, validation=(x[:, 400:], values[:, 400:], L[400:]),
                seed=0, progress=False)
    keep = ~padded[:, 400:]
    error = (reg.predict(split[1][0], L[400:]) - values[:, 400:])[keep]
    assert h["val_rmse"][-1] == pytest.approx(np.sqrt(np.mean(error ** 2)), rel=1e-6)
    assert h["val_mae"][-1] == pytest.approx(np.mean(np.abs(error)), rel=1e-6)
    mean = values[:, :400][~padded[:, :400]].mean(axis=0)
    assert h["mean_rmse"][-1] == pytest.approx(np.sqrt(np.mean((values[:, 400:][keep] - mean) ** 2)), rel=1e-6)
    one = fastlstm.Model(2, 8, 1, output="every", seed=0)
    assert set(one.fit(x, delayed.astype(np.float32), L, epochs=1, progress=False)) == {"step", "epoch", "loss", "lr"}
    with pytest.raises(ValueError, match=re.escape("output='every'), so y holds a target per step, time-major as x")
                       + ".*got shape \\(480, 10\\).*pass np.swapaxes\\(y, 0, 1\\)"):
        model.fit(x, labels.T.copy(), L, epochs=1, progress=False)
    with pytest.raises(ValueError, match=re.escape("got shape (480,)")):
        model.fit(x, labels[0], L, epochs=1, progress=False)
    gap = values.copy()                              # NaN padding (pandas' habit): where, and what to pad with
    t, n = np.argwhere(padded)[0]
    gap[t, n] = np.nan
    for fit_or_step, kind in ((lambda: reg.fit(x, gap, L, epochs=1, progress=False), "fit: y holds nan at (t, n, o)"),
                              (lambda: reg.train_step(x, gap, L), "y must be finite; found nan at index")):
        with pytest.raises(ValueError, match=re.escape(f"{kind}") + ".*" + re.escape(
                f", a padded step (lengths[{n}] = {L[n]}): padded targets count for nothing but must be finite, "
                f"so pad with 0")):
            fit_or_step()
    xgap = x.copy()                                  # NaN-padded inputs: the same (0 · NaN would reach δW)
    xgap[t, n, 1] = np.nan
    for fit_or_step, kind in ((lambda: reg.fit(xgap, values, L, epochs=1, progress=False), "fit: x holds nan at "
                               f"(t, n, d) = ({t}, {n}, 1)"),
                              (lambda: reg.train_step(xgap, values, L), f"x must be finite; found nan at index "
                               f"({t}, {n}, 1)"),
                              (lambda: reg.predict(xgap, L), f"x must be finite; found nan at index ({t}, {n}, 1)"),
                              (lambda: fastlstm.Model(2, 16, 2, output="every", batch_first=True).fit(
                                  xgap.transpose(1, 0, 2), values.transpose(1, 0, 2), L, epochs=1, progress=False),
                               f"fit: x holds nan at (n, t, d) = ({n}, {t}, 1)")):
        with pytest.raises(ValueError, match=re.escape(f"{kind}, a padded step (lengths[{n}] = {L[n]}): padded inputs "
                                                       f"count for nothing but must be finite, so pad with 0")):
            fit_or_step()
    beyond = L.copy()                                # bad lengths as well: they are said first, in every path
    beyond[n] = T + 1
    for fit_or_step in (lambda: reg.fit(xgap, values, beyond, epochs=1, progress=False),
                        lambda: reg.train_step(xgap, values, beyond), lambda: reg.predict(xgap, beyond),
                        lambda: reg.core.forward(xgap, lengths=beyond)):
        with pytest.raises(ValueError, match=re.escape(f"lengths must lie in 1..{T}") + ".*" + re.escape(f"max {T + 1}")):
            fit_or_step()
    with pytest.raises(ValueError, match=re.escape("fit: y holds nan at (n, o) = (3, 0)")):
        fastlstm.Model(2, 4, 1, seed=0).fit(x, np.where(np.arange(N) == 3, np.nan, 1.0), epochs=1, progress=False)
    negative = labels.copy()
    negative[7, 5] = -1
    with pytest.raises(ValueError, match=re.escape("sequence 5 has label -1 at step 7")):
        model.fit(x, negative, L, epochs=1, progress=False)


def test_model_fit_trains_a_model_with_an_embedding_on_token_ids():
    """fit refused the token ids (T, N) that a model with vocab_size takes everywhere else
    ("x must be a numeric array (T, N, D)")."""
    rng = np.random.default_rng(0)
    V, T, N = 12, 8, 300
    ids = rng.integers(0, V, (T, N))
    nxt = (ids + 3) % V                                         # a target per step, from the id
    lm = fastlstm.Model(6, 16, V, loss="xent", output="every", vocab_size=V, optimizer=fastlstm.Adam(lr=2e-2),
                        seed=0)
    xv, yv = np.ascontiguousarray(ids[:, 250:]), np.ascontiguousarray(nxt[:, 250:])
    h = lm.fit(ids[:, :250], nxt[:, :250], epochs=15, validation=(xv, yv), seed=0, progress=False)
    assert h["val_accuracy"][-1] > 0.95 and h["val_loss"][-1] == pytest.approx(lm.evaluate(xv, yv)["loss"], rel=1e-12)
    parity = fastlstm.Model(6, 16, 2, loss="xent", vocab_size=V, seed=0)      # a label per sequence, with lengths
    L = rng.integers(1, T + 1, N)
    assert np.isfinite(parity.fit(ids, ids[0] % 2, L, epochs=1, progress=False)["loss"][0])
    assert np.isfinite(parity.fit(ids[:1, :1], ids[0, :1] % 2, epochs=1, progress=False)["loss"][0])  # T = N = 1
    past = np.zeros((T, N), np.int64)
    past[2, 5] = V                                              # one past the last id, after valid 0s: named there
    for x, said in ((past, f"token ids must lie in 0..{V - 1} (the model's vocab_size is {V}), and x[2, 5] is {V}"),
                    (ids[..., None].astype(np.float32), "this model embeds tokens, so x holds integer token ids "
                                                        "(T, N), got shape (8, 300, 1) dtype float32")):
        with pytest.raises(ValueError, match=re.escape(said)):
            parity.fit(x, ids[0] % 2, epochs=1, progress=False)
    with pytest.raises(ValueError, match=re.escape("validation must be like the training data: x (T, B) with T = 8")):
        parity.fit(ids, ids[0] % 2, epochs=1, validation=(ids[:4], ids[0] % 2), progress=False)
    with pytest.raises(ValueError, match=re.escape("(token ids (T, N) need a model with an embedding: vocab_size=...)")):
        fastlstm.Model(6, 16, 2, loss="xent").fit(ids, ids[0] % 2, epochs=1, progress=False)


def test_plot_draws_the_metrics_log(files, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra")
    out = tmp_path / "s.ckpt"
    assert _run("train", "--data", str(files["arrays"]), "--epochs", "2", "--quiet", "--out",
                str(out)).returncode == 0
    r = _run("plot", str(tmp_path / "s.csv"), "--out", str(tmp_path / "c.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_data_commands_run_as_written(tmp_path):
    """Every `fastlstm` command of the README's "Your own data" section, pasted as it is into a
    folder holding a notes.txt, a load.csv and a sequences.npz, succeeds and writes what it says."""
    import shlex
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md"),
              encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Your own data")[1].split("\n## ")[0]
    commands = [line.strip().split("  #")[0] for line in section.splitlines() if line.startswith("    fastlstm ")]
    assert len(commands) == 8, commands
    from pydoc_data.topics import topics
    (tmp_path / "notes.txt").write_text("\n\n".join(topics[k] for k in sorted(topics))[:60000], encoding="utf-8")
    write_series(tmp_path / "load.csv", n=1000)
    write_arrays(tmp_path / "sequences.npz", N=300)
    for command in commands:
        if " plot " in command:
            pytest.importorskip("matplotlib", reason="the plot extra")
        r = subprocess.run([sys.executable, "-m", "fastlstm", *shlex.split(command)[1:]], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (command, r.stderr)
    for name in ("runs/notes.ckpt", "runs/load.best.ckpt", "runs/sequences.csv", "next.csv", "backtest.csv",
                 "probabilities.csv", "curves.png"):
        assert (tmp_path / name).exists(), name
    assert len((tmp_path / "next.csv").read_text().split()) == 25


def test_a_time_cell_reads_alike_on_every_python():
    """What is a time is ISO 8601 as Python 3.11's fromisoformat reads it, on 3.10 too: 3.10's
    own read only what its isoformat writes, so a column of `…T00:00Z` or `20240131` times
    was text there (a run stopped on it, or trained on 20240131 as a number)."""
    jan1 = 1704067200.0                                        # 2024-01-01T00:00 UTC
    for cell, want in (("2024-01-01T00:00Z", (jan1, True)), ("2024-01-01 00:00:00Z", (jan1, True)),
                       ("20240101", (jan1, False)), ("20240101T0130", (jan1 + 5400, False)),
                       ("2024-01-01T01:00+0100", (jan1, True)), ("2024-01-01T01:00+01", (jan1, True)),
                       ("2024-01-01T00:00:00,5", (jan1 + 0.5, False)), ("2024-W01-2", (jan1 + 86400, False))):
        assert data._time(cell) == want, cell
    for cell in ("2024-01-01T24:00", "2024-001", "01/31/2024", "2024-01", "1704067200"):
        assert data._time(cell) is None, cell


def test_a_time_column_with_a_repeated_hour_here_and_there_is_taken(tmp_path, capsys):
    """Local time at a clock change repeats an hour, half-hourly rows step back within it
    (02:30, then 02:00 again): the series still runs forward, so it trains; rows that go
    back further, or newest first, are refused (test_bad_data_...). Dates on hourly rows
    (a median step of 0) train too, their forecasts numbered by step, with a note: they
    were refused as not running forward in time, though sorted. So are the forecasts of a
    file of one row, which were all dated at its own time."""
    minutes = [h * 60 + m for h in range(4) for m in (0, 30)]
    minutes = minutes[:6] + [120, 150] + minutes[6:]              # 02:00 and 02:30 twice
    rows = [f"2024-10-27T{t // 60:02d}:{t % 60:02d}:00,{k % 5}" for k, t in enumerate(minutes * 3)]
    rows = [r.replace("27T", f"{27 + k // len(minutes)}T") for k, r in enumerate(rows)]
    path = tmp_path / "dst.csv"
    path.write_text("date,load\n" + "\n".join(rows) + "\n")
    assert cli.main(["train", "--data", str(path), "--target", "load", "--window", "3", "--steps", "2", "--quiet",
                     "--out", str(tmp_path / "run.ckpt")]) == 0
    aware = tmp_path / "aware.csv"                                # the file's offset dates the forecasts
    aware.write_text("date,load\n" + "".join(f"2024-10-01T{h:02d}:00:00+02:00,{h % 5}\n" for h in range(24)))
    assert cli.main(["train", "--data", str(aware), "--target", "load", "--window", "3", "--steps", "2", "--quiet",
                     "--out", str(tmp_path / "awarerun.ckpt")]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "awarerun.ckpt"), "--data", str(aware)]) == 0
    assert capsys.readouterr().out.startswith("time,load\n2024-10-02T00:00:00+02:00,")   # was 2024-10-01T22:00:00
    days = tmp_path / "days.csv"
    days.write_text("date,load\n" + "".join(f"2024-10-{1 + k // 24:02d},{k % 7}\n" for k in range(240)))
    capsys.readouterr()
    assert cli.main(["train", "--data", str(days), "--target", "load", "--window", "3", "--steps", "2",
                     "--out", str(tmp_path / "dayrun.ckpt")]) == 0
    assert ("note: column 'date' repeats its times (the median step between rows is 0), so forecasts are numbered "
            "by step, not dated") in capsys.readouterr().out
    assert cli.main(["predict", str(tmp_path / "dayrun.ckpt"), "--data", str(days)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("step,load\n1,"), out
    # a file of one row (a run with a window of 1): no step to continue; its forecasts were all dated at its time
    assert cli.main(["train", "--data", str(aware), "--target", "load", "--window", "1", "--horizon", "3", "--steps",
                     "2", "--quiet", "--out", str(tmp_path / "w1.ckpt")]) == 0
    capsys.readouterr()
    (tmp_path / "one.csv").write_text("date,load\n2024-10-02T05:00:00+02:00,3\n")
    assert cli.main(["predict", str(tmp_path / "w1.ckpt"), "--data", str(tmp_path / "one.csv")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("step,load\n1,") and out.splitlines()[3].startswith("3,") and len(out.splitlines()) == 4, out


@pytest.mark.parametrize("form, origin, forecast", [
    ("{d} {h:02d}:00", "2024-03-01 02:00", "2024-03-03 00:00"),          # a spreadsheet's: space, minutes
    ("{d}T{h:02d}:00:00Z", "2024-03-01T02:00:00Z", "2024-03-03T00:00:00Z"),
    ("{d}T{h:02d}:00:00.000", "2024-03-01T02:00:00.000", "2024-03-03T00:00:00.000"),
    ("{d}", "2024-03-03", "2024-04-18")])                                 # daily rows: dates
def test_forecasts_are_dated_in_the_form_the_file_writes_its_times(tmp_path, capsys, form, origin, forecast):
    """predict writes times as the file's last row does (they came out as
    2024-03-03T00:00:00 whatever the file wrote): the separator, the precision, a Z."""
    step = dt.timedelta(days=1) if form == "{d}" else dt.timedelta(hours=1)
    stamps = [dt.datetime(2024, 3, 1) + k * step for k in range(48)]
    path = tmp_path / "series.csv"
    path.write_text("time,load\n" + "".join(f"{form.format(d=t.date().isoformat(), h=t.hour)},{k % 5}\n"
                                            for k, t in enumerate(stamps)))
    assert cli.main(["train", "--data", str(path), "--target", "load", "--window", "3", "--horizon", "2", "--steps",
                     "2", "--quiet", "--out", str(tmp_path / "run.ckpt")]) == 0
    for more, first in ((["--backtest"], origin), ([], forecast)):   # a backtest's first origin: the window's end
        capsys.readouterr()
        assert cli.main(["predict", str(tmp_path / "run.ckpt"), "--data", str(path), *more]) == 0
        assert capsys.readouterr().out.splitlines()[1].startswith(first + ",")


@pytest.mark.parametrize("rows, then", [
    (["2024-10-01", "2024-11-01", "2024-12-01"], ["2025-01-01", "2025-02-01", "2025-03-01"]),      # monthly
    (["2024-11-30", "2024-12-31", "2025-01-31"], ["2025-02-28", "2025-03-31", "2025-04-30"]),      # month ends
    (["2024-01-15", "2024-04-15", "2024-07-15", "2024-10-15"], ["2025-01-15", "2025-04-15"]),      # quarterly
    (["2022-06-01T12:00", "2023-06-01T12:00", "2024-06-01T12:00"], ["2025-06-01T12:00"]),          # yearly
    (["2024-01-01T00:00+02:00", "2024-02-01T00:00+02:00"], ["2024-03-01T00:00+02:00"]),            # an offset
    ([f"2024-03-{d:02d}" for d in (4, 5, 6, 7, 8, 11, 12, 13, 14, 15)], ["2024-03-18", "2024-03-19"]),  # weekdays
    ([f"2024-03-{d:02d}" for d in range(4, 17)], ["2024-03-17", "2024-03-18"]),                    # every day
    (["2024-03-31T00:00", "2024-03-31T01:00"], ["2024-03-31T02:00", "2024-03-31T03:00"])])         # hourly
def test_forecasts_continue_the_calendar_of_the_rows(rows, then):
    """Monthly rows were dated one median step (31 days) apart: 2025-01-01, 2025-02-01,
    2025-03-04. Rows k months apart continue by months, on their day or at month ends, and
    weekday-only daily rows skip the weekend, as pandas infers a frequency."""
    parse = [dt.datetime.fromisoformat(r) for r in rows]
    tz = parse[-1].tzinfo
    seconds = [(p if p.tzinfo else p.replace(tzinfo=dt.timezone.utc)).timestamp() for p in parse]
    want = [dt.datetime.fromisoformat(r) for r in then]
    want = [(w if w.tzinfo else w.replace(tzinfo=dt.timezone.utc)).timestamp() for w in want]
    assert data.times_after(seconds, len(then), tz).tolist() == want


def test_monthly_rows_get_monthly_forecast_dates(tmp_path, capsys):
    path = tmp_path / "monthly.csv"
    path.write_text("month,sales\n" + "".join(f"{2020 + i // 12}-{i % 12 + 1:02d}-01,{100 + i % 7}\n" for i in range(48)))
    assert cli.main(["train", "--data", str(path), "--target", "sales", "--window", "12", "--horizon", "4", "--steps",
                     "2", "--quiet", "--out", str(tmp_path / "m.ckpt")]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "m.ckpt"), "--data", str(path)]) == 0
    dates = [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert dates == ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]


def test_arrays_an_npz_holds_beside_x_y_and_lengths_are_named_in_a_note(tmp_path, capsys):
    """A mean and scale saved beside the data are left unread, and the run says so (they
    were skipped without a word); a near miss of `lengths` is refused (test_bad_data_...)."""
    x = np.random.default_rng(0).standard_normal((20, 5, 2)).astype(np.float32)
    y, L = np.arange(20) % 2, np.full(20, 5)
    for arrays, note in ((dict(mean=np.zeros(2), scale=np.ones(2)), "'mean', 'scale' in the file are not read"),
                         (dict(lengths=L, lenghts=L), "'lenghts' in the file is not read")):
        path = tmp_path / "kept.npz"
        np.savez(path, x=x, y=y, **arrays)
        assert cli.main(["train", "--data", str(path), "--steps", "1", "--out", str(tmp_path / "k.ckpt"),
                         "--overwrite"]) == 0
        assert f"fastlstm: note: {note} (an .npz holds x, y and optionally lengths)" in capsys.readouterr().out
    assert cli.main(["predict", str(tmp_path / "k.ckpt"), "--data", str(path)]) == 0


def test_text_columns_left_out_of_the_default_features_are_named(tmp_path, capsys):
    """The features default to the numeric columns; a text column among them was left out
    without a word, though the user may have counted on it. The run names the features and
    what it left out, beside any other note; --features naming it is refused."""
    path = tmp_path / "sites.csv"
    path.write_text("date,site,load,kind\n" + "".join(f"2024-10-{1 + k // 24:02d},A{k % 2},{k % 7},x\n"
                                                      for k in range(240)))
    assert cli.main(["train", "--data", str(path), "--target", "load", "--window", "3", "--steps", "2",
                     "--out", str(tmp_path / "run.ckpt")]) == 0
    out = capsys.readouterr().out
    assert ("note: the features are 'load'; 'site', 'kind' hold text and are left out; column 'date' repeats "
            "its times") in out, out
    assert data.Series(str(path), target="load", features="load").note.startswith("column 'date' repeats")
    with pytest.raises(data.DataError, match=r"line 2, column 2 \('site'\).*column 'site' must be numeric"):
        data.Series(str(path), target="load", features="load,site")
    us = tmp_path / "us.csv"                    # dates a spreadsheet wrote in a locale's form: not ISO 8601
    us.write_text("when,load\n" + "".join(f"10/{1 + k // 24:02d}/2024 {k % 24:02d}:00,{k % 7}\n" for k in range(240)))
    assert data.Series(str(us), target="load").note == (
        "the features are 'load'; 'when' holds text and is left out (column 'when': '10/01/2024 00:00' is not an "
        "ISO 8601 time, such as 2024-01-31 or 2024-01-31 05:00, which would date the forecasts)")
    # a column with no values at all (every cell empty or NA) was said to hold text, and --target on it
    # read "column 'gap'; column 'gap' must be numeric"
    blank = tmp_path / "blank.csv"
    blank.write_text("when,load,gap,kind\n" + "".join(f"10/{1 + k // 24:02d}/2024,{k % 7},{('', 'NA')[k % 2]},x\n"
                                                     for k in range(240)))
    assert data.Series(str(blank), target="load").note == (
        "the features are 'load'; 'when', 'kind' hold text and are left out (column 'when': '10/01/2024' is not an "
        "ISO 8601 time, such as 2024-01-31 or 2024-01-31 05:00, which would date the forecasts); 'gap' holds no "
        "values and is left out")
    for chosen in ({"target": "gap"}, {"target": "load", "features": "load,gap"}):
        with pytest.raises(data.DataError, match=re.escape("blank.csv: column 'gap' holds no values: each cell is "
                                                           "empty or one of n/a, na, nan, none, null")):
            data.Series(str(blank), **chosen)


def test_metrics_below_a_thousandth_print_their_digits(tmp_path, capsys):
    """A series in small units (1e-6) printed every RMSE and MAE as 0.0000, and an lr of
    1e-5 as lr 0.0000: below 1e-3 the command line prints 4 significant digits, as Keras."""
    path = tmp_path / "small.csv"
    path.write_text("a\n" + "".join(f"{1e-6 * (2 + np.sin(k / 4)):.6e}\n" for k in range(300)))
    assert cli.main(["train", "--data", str(path), "--target", "a", "--window", "10", "--steps", "3", "--lr", "1e-5",
                     "--quiet", "--out", str(tmp_path / "run.ckpt")]) == 0
    out = capsys.readouterr().out
    last = out.splitlines()[-1]
    rmse = history(tmp_path / "run.ckpt")[-1]["val_rmse"]
    assert 1e-8 < rmse < 1e-5 and f"val_rmse {rmse:.4e}" in last and "lr 1.0000e-05" in last, out
    assert "train_loss 0." in last or "train_loss 1." in last                      # 4 decimals above 1e-3
    assert [cli._number(v) for v in (1e-3, 9.999e-4, 1e9, 999999999.0, -1e-3, 0.0)] == [
        "0.0010", "9.9990e-04", "1.0000e+09", "999999999.0000", "-0.0010", "0.0000"]      # the rule's two ends


def test_a_series_in_any_units_trains_as_in_units_of_one(tmp_path, capsys):
    """Columns of 1e-170 and of 1e300 standardise and score as a column of ones does (the
    standard deviation and the RMSE over values scaled by their largest, as LAPACK's
    norms). The squares of 1e-170 underflowed to 0: the column read as constant, was
    standardised with 1 (the model saw zeros), and every RMSE read 0 (skill 1.0); at
    1e-160 the standard deviation was off in its fourth digit. Those of 1e300 overflowed
    and the run was refused. Metrics in large units print in 4 significant digits, as in
    small ones, not as three hundred."""
    runs = {}
    for scale in (1.0, 1e-170, 1e300):
        path = tmp_path / f"{scale:g}.csv"
        path.write_text("a,b\n" + "".join(f"{scale * math.sin(k / 5)!r},{scale * math.cos(k / 5)!r}\n" for k in range(400)))
        assert cli.main(["train", "--data", str(path), "--target", "a", "--window", "10", "--steps", "120",
                         "--eval-every", "120", "--quiet", "--out", str(tmp_path / f"run{scale:g}.ckpt")]) == 0
        runs[scale] = history(tmp_path / f"run{scale:g}.ckpt")[-1], capsys.readouterr().out.splitlines()[-1]
    one = runs[1.0][0]
    assert one["skill"] > 0.5, one
    for scale in (1e-170, 1e300):
        h, last = runs[scale]
        assert h["skill"] == pytest.approx(one["skill"], rel=1e-4), (scale, h, one)
        for k in ("val_rmse", "val_mae", "naive_rmse", "naive_mae"):
            assert h[k] == pytest.approx(scale * one[k], rel=1e-4), (scale, k, h, one)
        assert f"val_rmse {h['val_rmse']:.4e}," in last, last


def test_numpys_raise_mode_is_no_error_of_fastlstms(tmp_path, capsys):
    """np.seterr(all="raise"), a debugging setting, makes an underflow an error. A Series of
    1e-170 values stopped with 'underflow encountered in square' (its standard deviation,
    whose small squares are rightly 0), and sample at a tiny temperature with 'underflow
    encountered in exp': each is now the run it is in NumPy's default mode, as a Model's
    calls were already (a refused step still says NonFiniteError)."""
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("a,b\n" + "".join(f"{1e-170 * math.sin(k / 5)!r},{1e-170 * math.cos(k / 5)!r}\n"
                                      for k in range(400)))
    text = tmp_path / "ab.txt"
    text.write_text("ab\n" * 400)
    x = np.random.default_rng(0).standard_normal((20, 64, 3)).astype(np.float32)
    y = np.ones((64, 2), np.float32)
    ckpt = str(tmp_path / "ab.ckpt")
    assert cli.main(["train", "--data", str(text), "--steps", "1", "--T", "10", "--quiet", "--out", ckpt]) == 0
    default = data.Series(str(tiny), target="a", window=10, horizon=2)
    with np.errstate(all="raise"):
        s = data.Series(str(tiny), target="a", window=10, horizon=2)
        assert np.array_equal(s.std, default.std) and np.array_equal(s.z, default.z) and s.std[0] > 1e-171
        assert cli.main(["train", "--data", str(tiny), "--target", "a", "--window", "10", "--steps", "20",
                         "--eval-every", "20", "--quiet", "--out", str(tmp_path / "tiny-run.ckpt")]) == 0
        assert cli.main(["sample", ckpt, "--length", "50", "--temperature", "1e-300", "--prime", ""]) == 0
        for cell in ("lstm", "gru", "rnn_relu"):
            m = fastlstm.Model(3, 8, 2, cell=cell, loss="mse", seed=0)
            m.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, schedule="cosine", progress=False)
            m.predict(x), m.evaluate(x, y), m.step(x[0])
            with pytest.raises(fastlstm.NonFiniteError):
                m.train_step(x, y * 1e30)


def test_skill_against_an_exact_naive_forecast_is_left_out_not_zero(tmp_path):
    """A constant target: the naive forecast is exact (RMSE 0), and a model that is not
    read "skill 0.0000" (as good as naive) and "seasonal_skill 0.0000". 1 - RMSE/0 is -inf:
    the run reports no skill. Both exact: 0."""
    from fastlstm.data import _skill
    assert _skill(0.5, 2.0) == 0.75 and _skill(0.0, 0.0) == 0.0 and _skill(0.1, 0.0) == -math.inf
    assert math.isnan(_skill(0.1, math.nan))
    path = tmp_path / "flat.csv"
    path.write_text("a,b\n" + "".join(f"5,{k % 7}\n" for k in range(200)))
    out = tmp_path / "run.ckpt"
    assert cli.main(["train", "--data", str(path), "--target", "a", "--window", "5", "--season", "7", "--steps", "3",
                     "--quiet", "--out", str(out)]) == 0
    last = history(out)[-1]
    assert last["naive_rmse"] == last["seasonal_rmse"] == 0 and last["val_rmse"] > 0, last
    assert "skill" not in last and "seasonal_skill" not in last, last


def test_a_csv_without_a_header_is_said(tmp_path):
    """A CSV of numbers alone: --target by name listed numbers as its columns without a word
    of why, and by number it trained with the first row taken as the header, unsaid."""
    path = tmp_path / "plain.csv"
    path.write_text("".join(f"{np.sin(k / 5):.4f},{k % 7}\n" for k in range(200)))
    with pytest.raises(data.DataError, match=re.escape("'load' is not a column; the columns are: 0.0000, 0 (by name, "
                                                       "or by number from 1); the first line looks like data, not a "
                                                       "header: a CSV series begins with a line of column names")):
        data.Series(str(path), target="load")
    assert data.Series(str(path), target="1").note == ("line 1, the header, is all numbers (0.0000, 0): if the file has "
                                                       "no header, its first row was read as one (add a line of "
                                                       "column names)")
    path.write_text("2023,2024\n" + "".join(f"{k},{k + 1}\n" for k in range(200)))     # years can name columns
    assert data.Series(str(path), target="2024").note.startswith("line 1, the header, is all numbers (2023, 2024)")
    path.write_text("nan,inf\n" + "".join(f"{k % 5},{k + 1}\n" for k in range(200)))
    assert data.Series(str(path), target="inf").note is None


def test_a_default_feature_that_counts_the_rows_is_said(tmp_path):
    """A numeric column rising by one step on every row (a Unix time, a row number) went into
    the default features unsaid: past the training rows the model meets values it never saw."""
    path = tmp_path / "clock.csv"
    path.write_text("timestamp,load,temp,id, n\n" + "".join(
        f"{1700000000 + 3600 * k},{np.sin(k / 5):.4f},{np.cos(k / 7):.3f},{k % 9},{k * 0.5}\n" for k in range(200)))
    assert data.Series(str(path), target="load").note == (
        "'timestamp', 'n' rise by the same step on every row (3600, 0.5), as a row number or a Unix time does: as "
        "features, their values past the training rows are ones the model never saw (--features load,temp,id "
        "leaves them out)")
    assert data.Series(str(path), target="load", features="load,timestamp").note is None     # chosen: not said
    assert data.Series(str(path), target="timestamp,load").note == (                          # a target: not said
        "'n' rises by the same step on every row (0.5), as a row number or a Unix time does: as a feature, its "
        "values past the training rows are ones the model never saw (--features timestamp,load,temp,id leaves it "
        "out)")
    path.write_text("step,load,\"a, b\"\n" + "".join(f"{k},{k % 4},{k % 3}\n" for k in range(50)))
    assert data.Series(str(path), target="load", window=5).note.endswith("(--features load,3 leaves it out)")  # a comma: by number
    path.write_text("t,load\n" + "".join(f"{k + (k > 30)},{k % 4}\n" for k in range(50)))  # a row missing: not a counter
    assert data.Series(str(path), target="load", window=5).note is None


def test_a_time_column_that_skips_ahead_is_said(tmp_path):
    """Rows missing from an hourly file (a logger's outage) were read as consecutive steps
    unsaid, so a window held days where it spans a gap. Said, with the longest; not said
    for a spring clock change in local time, business days' weekends, nor months."""
    def series(times, form="%Y-%m-%dT%H:%M"):
        path = tmp_path / "gaps.csv"
        path.write_text("date,load\n" + "".join(f"{t.strftime(form)},{k % 5}\n" for k, t in enumerate(times)))
        return data.Series(str(path), target="load", window=5)
    t0 = dt.datetime(2024, 1, 1)
    hours = [t0 + dt.timedelta(hours=h) for h in range(300)]
    assert series(hours).note is None
    assert series(hours[:100] + hours[172:250] + hours[253:]).note == (
        "column 'date' skips ahead 2 times against a median step of 1 hour (the longest, 3.04 days, from line 101's "
        "'2024-01-05T03:00' to line 102's '2024-01-08T04:00'): the rows are read as consecutive steps, so a window "
        "of 5 rows spans more time where it holds a gap (fill in the missing rows to keep it even)")
    assert series(hours[:40] + hours[41:]).note.startswith("column 'date' skips ahead once against a median step of "
                                                             "1 hour (the step, 2 hours, from line 41's")
    spring = [dt.datetime(2024, 3, 31) + dt.timedelta(minutes=30 * k) for k in range(200)]   # local time in Europe
    assert series([t for t in spring if not (t.day == 31 and dt.time(2) <= t.time() < dt.time(3))]).note is None
    assert "skips ahead once against a median step of 30 minutes (the step, 1.5 hours, from line 6's " \
           "'2024-03-31T02:00+01:00'" in series(spring[:5] + spring[7:], "%Y-%m-%dT%H:%M+01:00").note   # offsets
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(120)]
    weekdays = [d for d in days if d.weekday() < 5]
    assert series(weekdays, "%Y-%m-%d").note is None                         # Friday to Monday: business days
    assert "skips ahead once against a median step of 1 day (the step, 4 days, from line 11's '2024-01-12' to " \
           "line 12's '2024-01-16')" in series(weekdays[:10] + weekdays[11:], "%Y-%m-%d").note   # a Monday holiday
    assert series([dt.date(2000 + m // 12, m % 12 + 1, 1) for m in range(60)], "%Y-%m-%d").note is None


def test_the_python_data_api_checks_its_settings_as_the_command_line_does(tmp_path):
    """From Python, window=2.5 trained on windows of 2, "5" was parsed, True read as 1,
    target=1 raised "'int' object is not iterable", a list of targets skipped the checks of
    "a,b" (a column named twice), and open_data(kind="image") raised KeyError."""
    csv = write_series(tmp_path / "load.csv", n=300)
    (tmp_path / "notes.txt").write_text("abc " * 500)
    arrays = write_arrays(tmp_path / "seq.npz", N=20)
    for make, error, said in (
            (lambda: data.Series(str(csv), target="load", window=2.5), TypeError, "--window must be an integer, got float 2.5"),
            (lambda: data.Series(str(csv), target="load", window="5"), TypeError, "--window must be an integer, got str '5'"),
            (lambda: data.Series(str(csv), target="load", horizon=True), TypeError, "--horizon must be an integer"),
            (lambda: data.Series(str(csv), target="load", season=24.0), TypeError, "--season must be an integer"),
            (lambda: data.Series(str(csv), target="load", val_fraction="0.2"), TypeError, "--val-fraction must be a number"),
            (lambda: data.Series(str(csv), target=["load", "load"]), ValueError, "--target names column 'load' twice"),
            (lambda: data.Series(str(csv), target=[2, "nope"]), ValueError, "--target 'nope' is not a column"),
            (lambda: data.Series(str(csv), target=1.0), TypeError, "--target must be column names or numbers"),
            (lambda: data.Text(str(tmp_path / "notes.txt"), T=1.5), TypeError, "--T must be an integer, got float 1.5"),
            (lambda: data.Text(str(tmp_path / "notes.txt"), T=0), ValueError, "--T must be >= 1, got 0"),
            (lambda: data.Series(str(csv), target="load", window=0), ValueError, "--window must be >= 1, got 0"),
            (lambda: data.Series(str(csv), target="load", horizon=0), ValueError, "--horizon must be >= 1, got 0"),
            (lambda: data.Series(str(csv), target="load", season=0), ValueError, "--season must be >= 1, got 0"),
            (lambda: data.Series(str(csv), target="load", fill="mean"), ValueError,
             "--fill must be ffill or zero, got 'mean'"),
            (lambda: data.Series(str(csv), target="load", val_fraction=1.0), ValueError,
             "--val-fraction must be in (0, 1), got 1.0"),
            (lambda: data.Series(str(csv), target="load", val_fraction=0), ValueError,
             "--val-fraction must be in (0, 1), got 0"),
            (lambda: data.Arrays(str(arrays), layout="ntd"), ValueError, "--layout must be batch or time, got 'ntd'"),
            (lambda: fastlstm.Model(3, 4, 2, vocab_size=5, loss="xent").fit(
                np.zeros((0, 4), np.int64), np.zeros(4, int), epochs=1, progress=False),
             ValueError, "fit: x has an empty dimension: (T, N) = (0, 4)"),
            *((lambda f=f: data.Arrays(str(arrays), val_fraction=f), ValueError,
               f"--val-fraction must be in (0, 1), got {f}") for f in (0, 1)),
            (lambda: data.open_data(str(csv), kind="image"), ValueError, "kind must be one of text, series, arrays")):
        with pytest.raises(error, match=re.escape(said)):
            make()
    for target in ("load", 2, [2], ["load"], ("load",)):
        assert data.Series(str(csv), target=target, features=[3, "load"]).targets == ["load"]
    assert data.Series(str(csv), target="load", features=(3, "load")).features == ["temp", "load"]
    assert data.Series(str(csv), target="load", window=np.int64(5)).window == 5
    assert data.Series(str(csv), target="load", season=1).season == 1          # the naive forecast's season
    hours = tmp_path / "hours.csv"         # 24 rows, 18 for training: a window and horizon of exactly 18 fit
    hours.write_text("date,load\n" + "".join(f"2024-01-02T{h:02d}:00:00,{h % 5}\n" for h in range(24)))
    assert data.Series(str(hours), target="load", window=15, horizon=3, val_fraction=0.25).n_train == 18
    with pytest.raises(ValueError, match=re.escape("window + horizon = 19 rows, longer than the training part (18 of")):
        data.Series(str(hours), target="load", window=16, horizon=3, val_fraction=0.25)
    with pytest.raises(ValueError, match=re.escape("--target '2' is not a column")):   # in a list, a name alone:
        data.Series(str(csv), target=["2"])       # a checkpoint's column "2" must not become another file's 2nd


def test_arrays_hold_out_the_rounded_fraction_and_each_part_keeps_a_sequence(tmp_path):
    """round(N × val_fraction) sequences are held out: one, or all but one, is a valid split;
    none, or all N, is refused with the count."""
    rng = np.random.default_rng(0)
    for N, f, held in ((5, 0.2, 1), (5, 0.8, 4), (2, 0.2, 0), (2, 0.9, 2)):
        path = tmp_path / f"n{N}.npz"
        np.savez(path, x=rng.standard_normal((N, 3, 2)), y=np.arange(N) % 2)
        if held in (0, N):
            with pytest.raises(data.DataError, match=re.escape(f"{N} sequences cannot be split into training and "
                                                               f"validation parts at --val-fraction {f} (it holds "
                                                               f"out {held}); each part needs at least one")):
                data.Arrays(str(path), val_fraction=f)
        else:
            a = data.Arrays(str(path), val_fraction=f)
            assert (len(a.val_rows), a.size) == (held, N - held)
            assert sorted([*a.val_rows, *a.train_rows]) == list(range(N))


def test_bad_targets_in_arrays_are_named_where_they_are(tmp_path):
    """A non-finite target is named by its sequence, (n, t) for a target per step, (n, o) for
    several per sequence; class labels reach 2^20 - 1 (that many outputs), and 2^20 is refused."""
    x = np.random.default_rng(0).standard_normal((6, 4, 2))
    for y, where, output in ((np.ones(6), "sequence 2", "last"), (np.ones((6, 4)), "(n, t) = (2, 1)", "every"),
                             (np.ones((6, 3)), "(n, o) = (2, 1)", "last")):
        y[(2, 1)[:y.ndim]] = np.nan
        np.savez(tmp_path / "y.npz", x=x, y=y)
        with pytest.raises(data.DataError, match=re.escape(f"y.npz: y holds nan at {where}")):
            data.Arrays(str(tmp_path / "y.npz"), output=output)
    labels = np.zeros(6, np.int64)
    labels[4] = data.MAX_CLASSES - 1
    np.savez(tmp_path / "c.npz", x=x, y=labels)
    assert data.Arrays(str(tmp_path / "c.npz")).output_size == data.MAX_CLASSES
    labels[4] += 1
    np.savez(tmp_path / "c.npz", x=x, y=labels)
    with pytest.raises(data.DataError, match=re.escape(f"class labels y must lie in 0..{data.MAX_CLASSES - 1} "
                                                       f"(class indices 0..C-1), got min 0, max {data.MAX_CLASSES}")):
        data.Arrays(str(tmp_path / "c.npz"))


def test_a_text_whose_parts_hold_exactly_t_plus_1_characters_is_taken(tmp_path):
    """Each part needs T + 1 characters (a window and its next character): 22 characters at
    T = 10 and val_fraction 0.5 give 11 and 11, one window each; 21 give 11 and 10."""
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 2 + "ab")
    assert data.Text(str(path), T=10, val_fraction=0.5).size == 1
    path.write_text("abcdefghij" * 2 + "a")
    with pytest.raises(data.DataError, match=re.escape("11 would go to training and 10 be held out; each part needs "
                                                       "at least T + 1 = 11")):
        data.Text(str(path), T=10, val_fraction=0.5)


def test_a_text_of_one_character_has_zero_unigram_bits_not_minus_zero(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("a" * 500)
    bpc = data.Text(str(path), T=10).unigram_bpc
    assert bpc == 0 and np.copysign(1.0, bpc) == 1.0 and f"{bpc:.4f}" == "0.0000"


def test_sample_never_writes_the_unknown_character(tmp_path, capsys):
    """Id 0 of a text model stands for a character unseen in training; sampling drew it from
    an untrained model and printed U+FFFD. Now only the text's characters come out, at any
    temperature (a greedy one whose argmax is id 0 included)."""
    path, out = tmp_path / "ab.txt", tmp_path / "ab.ckpt"
    path.write_text("ab\n" * 400)
    assert cli.main(["train", "--data", str(path), "--steps", "1", "--T", "10", "--quiet", "--out", str(out)]) == 0
    m = fastlstm.load(out)
    m.bias[0] = 50                                      # the head all but certain of the unknown character
    m.save(out, extra=m.extra)
    for temperature in ("5", "1", "1e-300"):
        capsys.readouterr()
        assert cli.main(["sample", str(out), "--length", "300", "--temperature", temperature, "--prime", ""]) == 0
        text = capsys.readouterr().out
        assert len(text) == 301 and set(text) <= set("ab\n"), repr(text[:40])


def test_a_text_checkpoint_of_one_hot_inputs_samples_predicts_and_resumes(tmp_path, capsys):
    """Text models before embeddings (2026-12-02) took each character as a one-hot vector of
    the vocabulary's size. Such a checkpoint, its W the embedded model's W·Eᵀ, samples the
    same text as that model; predict and --resume feed it one-hot rows too."""
    path = tmp_path / "ab.txt"
    path.write_text("abcab cabbage\n" * 60)
    assert cli.main(["train", "--data", str(path), "--steps", "5", "--T", "10", "--hidden", "8", "--embed", "4",
                     "--quiet", "--out", str(tmp_path / "e.ckpt")]) == 0
    m = fastlstm.load(tmp_path / "e.ckpt")
    old = fastlstm.Model(m.vocab_size, 8, m.output_size, loss="xent", output="every")
    sd = m.core.torch_state_dict()
    sd["weight_ih_l0"] = sd["weight_ih_l0"] @ m.E.T          # W·(row k of I) = W·Eᵀ's column k = W·E[k]
    old.core.load_torch_state_dict(sd)
    old.V[:], old.bias[:] = m.V, m.bias
    old.save(tmp_path / "o.ckpt", extra=m.extra)
    said = []
    for ck in ("e", "o"):
        capsys.readouterr()
        assert cli.main(["sample", str(tmp_path / f"{ck}.ckpt"), "--length", "40", "--prime", "ab", "--seed", "3"]) == 0
        said.append(capsys.readouterr().out)
    assert said[0] == said[1] and len(said[0]) == 43 and set(said[0]) <= set("abcge \n")
    assert cli.main(["predict", str(tmp_path / "o.ckpt"), "--data", str(path), "--out", str(tmp_path / "p.csv")]) == 0
    assert cli.main(["predict", str(tmp_path / "e.ckpt"), "--data", str(path), "--out", str(tmp_path / "q.csv")]) == 0
    p, q = ((tmp_path / f).read_text().splitlines() for f in ("p.csv", "q.csv"))
    assert p[0] == "characters,bpc" and p[1].split(",")[0] == "839"
    assert float(p[1].split(",")[1]) == pytest.approx(float(q[1].split(",")[1]), rel=1e-4)
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "o.ckpt"), "--steps", "9", "--quiet"]) == 0
    resumed = fastlstm.load(tmp_path / "o.ckpt")
    assert resumed.vocab_size is None and resumed.steps == 9


def test_a_series_of_100000_columns_opens_in_one_pass(tmp_path):
    """Each column was looked up by scanning the header's names (names.index, `in` a list),
    so opening a CSV took time in the square of its width: 100,000 columns ran past 100 s.
    The names are dictionaries and sets now; the subprocess's timeout stands for "it hangs".
    The features keep the order given, a checkpoint's list of names included."""
    C = 100_000
    v = np.random.default_rng(0).integers(0, 9, (8, C))
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(C)) + "\n" + "\n".join(",".join(map(str, r)) for r in v) + "\n")
    np.save(tmp_path / "v.npy", v)
    script = f"""if True:
        import numpy as np
        from fastlstm import data
        v = np.load({str(tmp_path / "v.npy")!r})
        d = data.open_data({str(path)!r}, target="c{C - 1}", window=2, val_fraction=0.25)
        assert d.input_size == {C} and d.columns == [f"c{{i}}" for i in range({C})] and d._t == [{C - 1}]
        train = v[:6]
        std = np.where(train.std(axis=0) > 0, train.std(axis=0), 1.0)
        assert np.allclose(d.z, (v - train.mean(axis=0)) / std)
        backwards = [f"c{{i}}" for i in reversed(range({C}))]             # as a checkpoint lists them
        d = data.open_data({str(path)!r}, target="c0", features=backwards, window=2, val_fraction=0.25)
        assert d.columns == backwards and d._f == list(range({C})) and d._t == [{C - 1}]
        d = data.open_data({str(path)!r}, target=backwards, features=["c0"], window=2, val_fraction=0.25)
        assert d.output_size == {C} and d.input_size == 1                  # every column a target
        try:                                               # the header listed whole: 700 KB of message
            data.open_data({str(path)!r}, target="nope", window=2)
        except data.DataError as e:
            assert "the columns are: c0, c1, c2, " in str(e) and "c11, … and {C - 12} more" in str(e)
            assert len(str(e)) < 500, len(str(e))
        print("ok")
    """
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
