"""ONNX export, checked by ONNX Runtime: the sequence graph equals Model.predict (and the
layer stack's final states), the streaming graph called step by step equals Model.step,
and the files pass onnx.checker after a round trip through onnx.load. "lstmp" is the LSTM
with projections (proj_size 3 of H = 5), which the export writes as Scan nodes."""
import itertools
import re
import subprocess
import sys

import numpy as np
import pytest

import fastlstm

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CELLS = ["lstm", "rnn", "gru", "lstmp", "rnn_relu"]
CASES = list(itertools.product(CELLS, [1, 2, 3], ["mse", "xent"], ["last", "every"], [False, True]))


def _model(cell, layers, loss="mse", output="last", seed=1, **settings):
    proj = dict(cell="lstm", proj_size=3) if cell == "lstmp" else dict(cell=cell)
    m = fastlstm.Model(3, 5, 4, layers, loss=loss, output=output, seed=seed, **proj, **settings)
    m.params[:] = np.random.default_rng(seed).uniform(-0.5, 0.5, m.params.size)   # not just the init
    return m


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3            # h0/c0 are overridable initializers: ORT warns about that
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("cell,layers,loss,output,with_lengths", CASES)
def test_onnx_runtime_equals_predict(tmp_path, cell, layers, loss, output, with_lengths):
    m = _model(cell, layers, loss, output)
    rng = np.random.default_rng(layers)
    T, B = 9, 5
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B) if with_lengths else None
    fastlstm.export_onnx(m, tmp_path / "m.onnx")
    s = _session(tmp_path / "m.onnx")
    lens = (lengths if with_lengths else np.full(B, T)).astype(np.int32)
    outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"x": x, "sequence_lens": lens})))
    want = m.predict(x, lengths)
    assert outs["predictions"].shape == want.shape
    assert np.abs(outs["predictions"] - want).max() <= 1e-5
    states = m.core.forward(x, lengths=lengths)[1]
    hn, cn = states if m.cell == "lstm" else (states, None)
    assert outs["hn"].shape == hn.shape and np.abs(outs["hn"] - hn).max() <= 1e-5
    if m.cell == "lstm":
        assert outs["cn"].shape == cn.shape and np.abs(outs["cn"] - cn).max() <= 1e-5


@pytest.mark.parametrize("output,tokens", [("last", False), ("every", False), ("every", True)])
def test_a_batch_first_models_graph_takes_its_layout(tmp_path, output, tokens):
    """A batch_first model's graph takes x (B, T, D) (token ids (B, T)) and gives (B, T, O)
    per step, as the model's predict does and as PyTorch's export of a batch_first module
    does; the states stay (layers, B, ·). It took (T, B, D) whatever the setting, so a
    Keras user's (B, T, D) batch ran with B and T swapped, or was refused."""
    m = _model("lstm", 2, "xent" if tokens else "mse", output, batch_first=True,
               **(dict(vocab_size=7) if tokens else {}))
    B, T = 5, 9
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (B, T)) if tokens else rng.standard_normal((B, T, 3)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    proto = fastlstm.export_onnx(m, tmp_path / "m.onnx")
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input[:1]]
    assert dims == [["B", "T"] + [3] * (not tokens)]
    got = _session(tmp_path / "m.onnx").run(["predictions", "hn"], {"x": x, "sequence_lens": lengths.astype(np.int32)})
    want = m.predict(x, lengths)
    assert got[0].shape == want.shape and np.abs(got[0] - want).max() <= 1e-5
    with m.time_major():                                  # the same model, time-major: the same numbers
        assert np.array_equal(m.predict(np.ascontiguousarray(np.swapaxes(x, 0, 1)), lengths),
                              np.swapaxes(want, 0, 1) if output == "every" else want)
    assert got[1].shape == (2, B, 5)


@pytest.mark.parametrize("cell", CELLS)
def test_initial_states_are_optional_inputs(tmp_path, cell):
    m = _model(cell, 2, "mse", "last")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, m.core.Hr)).astype(np.float32)
    c0 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    fastlstm.export_onnx(m, tmp_path / "m.onnx")
    s = _session(tmp_path / "m.onnx")
    feed = {"x": x, "sequence_lens": np.full(3, 6, np.int32), "h0": h0}
    if m.cell == "lstm":
        feed["c0"] = c0
        y, (hn, cn) = m.core.forward(x, h0, c0)
    else:
        y, hn = m.core.forward(x, h0)
    outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))
    assert np.abs(outs["hn"] - hn).max() <= 1e-5
    assert np.abs(outs["predictions"] - (hn[-1] @ m.V.T + m.bias)).max() <= 1e-5


@pytest.mark.parametrize("cell,loss", list(itertools.product(CELLS, ["mse", "xent"])))
def test_the_streaming_graph_step_by_step_equals_model_step(tmp_path, cell, loss):
    m = _model(cell, 2, loss, "every")
    fastlstm.export_onnx(m, tmp_path / "step.onnx", streaming=True)
    s = _session(tmp_path / "step.onnx")
    rng = np.random.default_rng(0)
    B = 3
    h = np.zeros((2, B, m.core.Hr), np.float32)
    c = np.zeros((2, B, 5), np.float32)
    m.reset_state(B)
    for t in range(8):
        x = rng.standard_normal((B, 3)).astype(np.float32)
        feed = {"x": x, "h": h} | ({"c": c} if m.cell == "lstm" else {})
        outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))
        h = outs["h_out"]
        c = outs.get("c_out", c)
        assert np.abs(outs["predictions"] - m.step(x)).max() <= 1e-5, f"step {t}"


def test_an_exported_file_loads_checks_and_records_opset_ir_version_and_producer(tmp_path):
    m = _model("lstm", 2, "xent", "last")
    fastlstm.export_onnx(m, tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.producer_name == "fastlstm" and proto.producer_version == fastlstm.__version__
    assert [o.version for o in proto.opset_import if o.domain == ""] == [17]
    assert proto.ir_version == 8     # opset 17's least, so that runtimes older than the onnx package load it
    assert [n.op_type for n in proto.graph.node].count("LSTM") == 2
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["T", "B", 3]                       # dynamic T and B
    fastlstm.export_onnx(_model("lstmp", 2, bidirectional=True), tmp_path / "p.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "p.onnx")).graph.node]
    assert ops.count("Scan") == 4 and ops.count("ReverseSequence") == 4 and "LSTM" not in ops


@pytest.mark.parametrize("cell,output,streaming", list(itertools.product(
    ["lstm", "lstmp"], ["last", "every"], [False, True])))
def test_every_initializer_is_read_by_a_node_or_is_an_input(tmp_path, cell, output, streaming):
    # An unread initializer is dead weight that ONNX Runtime warns about at every load
    m = _model(cell, 2, "mse", output, bidirectional=cell == "lstmp" and not streaming)
    fastlstm.export_onnx(m, tmp_path / "m.onnx", streaming=streaming)
    g = onnx.load(str(tmp_path / "m.onnx")).graph
    bodies = [a.g for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]   # Scan's cells
    read = {name for n in g.node for name in n.input} | {i.name for i in g.input}
    read |= {name for b in bodies for n in b.node for name in n.input}
    assert [i.name for i in g.initializer if i.name not in read] == []
    assert len({i.name for i in g.initializer}) == len(g.initializer)


def test_what_onnx_runtime_cannot_run_is_refused_with_a_reason(tmp_path):
    m = fastlstm.Model(3, 5, 4, dtype=np.float64)
    with pytest.raises(ValueError, match="float32 only"):
        fastlstm.export_onnx(m, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_fastlstm_export_from_the_command_line(tmp_path):
    ckpt, out = tmp_path / "a.ckpt", tmp_path / "a.onnx"
    run = lambda *a: subprocess.run([sys.executable, "-m", "fastlstm", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=300)
    r = run("train", "--steps", "3", "--T", "12", "--hidden", "8", "--batch", "8", "--quiet", "--out", str(ckpt))
    assert r.returncode == 0, r.stderr
    r = run("export", str(ckpt), str(out))
    assert r.returncode == 0 and f"{out} (whole sequences of x (T, B, ·), time-major)" in r.stdout, r.stderr
    m = fastlstm.load(ckpt)
    bf = fastlstm.Model(2, 8, 1, batch_first=True)                     # one made in Python: its own layout, said
    bf.save(tmp_path / "bf.ckpt")
    r = run("export", str(tmp_path / "bf.ckpt"), str(tmp_path / "bf.onnx"))
    assert r.returncode == 0 and "whole sequences of x (B, T, ·), batch first" in r.stdout, r.stderr
    x = np.random.default_rng(0).random((12, 4, 2), np.float32)
    got = _session(out).run(["predictions"], {"x": x, "sequence_lens": np.full(4, 12, np.int32)})[0]
    assert np.abs(got - m.predict(x)).max() <= 1e-5
    r = run("export", str(ckpt), str(tmp_path / "s.onnx"), "--streaming")
    assert r.returncode == 0 and (tmp_path / "s.onnx").exists(), r.stderr
    r = run("export", str(tmp_path / "missing.ckpt"), str(out))
    assert r.returncode == 2 and r.stderr.startswith("fastlstm: error:")
    r = run("train", "--steps", "3", "--T", "12", "--hidden", "8", "--batch", "8", "--quiet", "--dtype", "float64",
            "--out", str(tmp_path / "d.ckpt"))
    assert r.returncode == 0, r.stderr
    r = run("export", str(tmp_path / "d.ckpt"), str(tmp_path / "d.onnx"))
    assert r.returncode == 2 and "fastlstm export CKPT OUT --float32" in r.stderr, r.stderr
    r = run("export", str(tmp_path / "d.ckpt"), str(tmp_path / "d.onnx"), "--float32")
    assert r.returncode == 0 and "a float32 copy of the float64 model" in r.stdout, r.stderr
    got = _session(tmp_path / "d.onnx").run(["predictions"], {"x": x, "sequence_lens": np.full(4, 12, np.int32)})[0]
    assert np.abs(got - fastlstm.load(tmp_path / "d.ckpt").predict(x.astype(np.float64))).max() <= 1e-5


def test_a_series_runs_graph_takes_and_gives_the_datas_units(tmp_path, capsys):
    """A `--data` series model reads standardised features and gives standardised targets;
    its ONNX graph did too, and nothing said so: fed the file's values, it forecast
    garbage. `fastlstm export` now puts the run's standardisation in the graph, so that
    the window's values in their units give the forecast `fastlstm predict` gives."""
    from fastlstm import cli, data
    path, ckpt, out = tmp_path / "load.csv", tmp_path / "run.ckpt", tmp_path / "run.onnx"
    rng = np.random.default_rng(0)
    hours = np.arange(200)
    path.write_text("time,temp,load\n" + "".join(
        f"2024-01-{1 + h // 24:02d}T{h % 24:02d}:00,{15 + 5 * np.sin(h / 4) + rng.normal():.3f},"
        f"{900 + 300 * np.sin(h / 4 + 1) + 20 * rng.normal():.2f}\n" for h in hours))
    assert cli.main(["train", "--data", str(path), "--target", "load,temp", "--features", "temp,load",
                     "--window", "24", "--horizon", "3", "--steps", "30", "--quiet", "--out", str(ckpt)]) == 0
    assert cli.main(["export", str(ckpt), str(out)]) == 0
    assert ("x: the window's temp, load in the data's units, predictions: 3 rows of load, temp in theirs"
            in capsys.readouterr().out)
    one = tmp_path / "one.ckpt"                                           # it said "1 rows"
    assert cli.main(["train", "--data", str(path), "--target", "load", "--window", "24", "--steps", "1", "--quiet",
                     "--out", str(one)]) == 0
    assert cli.main(["export", str(one), str(tmp_path / "one.onnx")]) == 0
    assert "predictions: 1 row of load in theirs)" in capsys.readouterr().out
    m = fastlstm.load(ckpt)
    d = data.from_spec(m.extra["data"], str(path))
    _, want = d.next_forecast(m)                                          # (horizon, targets), the data's units
    window = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2), dtype=np.float32)[-24:]
    got = _session(out).run(["predictions"], {"x": window[:, None, :], "sequence_lens": np.array([24], np.int32)})[0]
    assert np.allclose(got.reshape(3, 2), want, rtol=1e-4), (got, want)
    assert abs(want).min() > 10                                           # in units: loads near 900, temps near 15
    with pytest.raises(ValueError, match="scale applies to an mse model on vectors"):
        fastlstm.export_onnx(fastlstm.Model(2, 4, 3, loss="xent"), tmp_path / "x.onnx", scale=(0, 1, 0, 1))
    with pytest.raises(ValueError, match="scale's std_x must be > 0"):
        fastlstm.export_onnx(m, tmp_path / "x.onnx", scale=(np.zeros(2), np.zeros(2), np.zeros(6), np.ones(6)))
    with pytest.raises(ValueError, match=r"scale's std_x must be 2 finite float32 numbers, got \[1e\+300, 1\.0\]"):
        fastlstm.export_onnx(m, tmp_path / "x.onnx", scale=(np.zeros(2), [1e300, 1], np.zeros(6), np.ones(6)))
    with pytest.raises(ValueError, match=r"scale's mean_y must be 6 finite float32 numbers, got shape \(2,\)"):
        fastlstm.export_onnx(m, tmp_path / "x.onnx", scale=(np.zeros(2), np.ones(2), np.zeros(2), np.ones(6)))
    with pytest.raises(TypeError, match=re.escape("scale must be (mean_x, std_x, mean_y, std_y)")):
        fastlstm.export_onnx(m, tmp_path / "x.onnx", scale=(np.zeros(2), np.ones(2)))


@pytest.mark.parametrize("cell,layers,output", list(itertools.product(CELLS, [1, 2, 3], ["last", "every"])))
def test_a_bidirectional_model_under_onnx_runtime_equals_predict(tmp_path, cell, layers, output):
    """One node with direction="bidirectional" per layer (projected: a Scan per direction,
    the reverse one between two ReverseSequence); ONNX Runtime runs the reverse direction
    over each row's own length, as fastlstm does, so padding never leaks in."""
    m = _model(cell, layers, output=output, bidirectional=True)
    rng = np.random.default_rng(layers)
    T, B = 9, 5
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    fastlstm.export_onnx(m, tmp_path / "bi.onnx")
    s = _session(tmp_path / "bi.onnx")
    outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"x": x, "sequence_lens": lengths.astype(np.int32)})))
    assert np.abs(outs["predictions"] - m.predict(x, lengths)).max() <= 1e-5
    states = m.core.forward(x, lengths=lengths)[1]
    hn = states[0] if m.cell == "lstm" else states
    assert outs["hn"].shape == (2 * layers, B, m.core.Hr) and np.abs(outs["hn"] - hn).max() <= 1e-5
    with pytest.raises(ValueError, match=r"cannot stream .*\(streaming=False; fastlstm export without --streaming\)"):
        fastlstm.export_onnx(m, tmp_path / "no.onnx", streaming=True)
    with pytest.raises(TypeError, match=f"export_onnx takes a fastlstm.Model, got {type(m.core).__name__}$"):
        fastlstm.export_onnx(m.core, tmp_path / "no.onnx")
    with pytest.raises(TypeError, match="streaming must be True or False, got 'no'"):   # it wrote the streaming graph
        fastlstm.export_onnx(m, tmp_path / "no.onnx", streaming="no")
    with pytest.raises(TypeError, match="the path of the ONNX model must be a str, bytes or os.PathLike, got int"):
        fastlstm.export_onnx(m, 5)
    assert not (tmp_path / "no.onnx").exists()


@pytest.mark.parametrize("proj_size", [0, 3])
def test_an_embedding_model_takes_token_ids_in_both_graphs(tmp_path, proj_size):
    m = fastlstm.Model(4, 6, 7, 2, loss="xent", output="every", vocab_size=7, dropout=0.3, seed=2, proj_size=proj_size)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, (8, 3))
    fastlstm.export_onnx(m, tmp_path / "e.onnx")
    s = _session(tmp_path / "e.onnx")
    out = s.run(["predictions"], {"x": ids, "sequence_lens": np.full(3, 8, np.int32)})[0]
    assert np.abs(out - m.predict(ids)).max() <= 1e-5
    fastlstm.export_onnx(m, tmp_path / "es.onnx", streaming=True)
    s = _session(tmp_path / "es.onnx")
    h, c = np.zeros((2, 3, m.core.Hr), np.float32), np.zeros((2, 3, 6), np.float32)
    m.reset_state(3)
    for t in range(8):
        p, h, c = s.run(["predictions", "h_out", "c_out"], {"x": ids[t], "h": h, "c": c})
        assert np.abs(p - m.step(ids[t])).max() <= 1e-5
