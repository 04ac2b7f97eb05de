"""ONNX export: a Model as ONNX's own recurrent operators, checked by onnx.checker.

    fastlstm.export_onnx(model, "model.onnx")                  # whole sequences
    fastlstm.export_onnx(model, "step.onnx", streaming=True)   # one step, state in and out

The sequence graph takes x (T, B, D) float32 and sequence_lens (B,) int32, with T and B
dynamic, and optionally h0 (num_layers, B, Hr) and c0 (num_layers, B, H), which default
to zeros. It gives predictions ((B, O) for output="last", (T, B, O) for "every", zero past
each length) and the final states hn, cn. A batch_first model's graph takes x (B, T, D)
and gives (B, T, O), as the model does (a Transpose at each end; the states stay
(num_layers, B, ·), as PyTorch's). Each layer is one ONNX `LSTM`, `GRU` or `RNN`
node. The head is MatMul + Add, with Softmax for xent. "last" reads the top layer's Y_h,
which ONNX defines as h at each row's last real step.

ONNX's LSTM has no projection, so a layer with one (proj_size) is a `Scan` per direction
whose body is the cell, written out in MatMul, Split, Sigmoid, Tanh and Where: each row
holds its state past its length, as sequence_lens makes the LSTM node do, and the reverse
direction runs between two `ReverseSequence` nodes, on each row's own steps.

The streaming graph takes x (B, D), h (num_layers, B, Hr) and c (num_layers, B, H). It
gives this step's predictions and the new h, c: what Model.step does, for runtimes that
keep no state.

Layouts: ONNX orders an LSTM's gate blocks i, o, f, c (c is our candidate a), a GRU's
z, r, h (h is our n), and keeps the input and recurrence biases apart (Wb, Rb): fastlstm's
bias goes to Wb, except the GRU's b_hn, which goes to Rb's h block (ONNX's GRU with
linear_before_reset=1 is PyTorch's: r multiplies R_h h + Rb_h). Needs the `onnx` extra
(onnx; onnxruntime to run the graphs).
"""
import numpy as np

from . import __version__
from . import _validate as v
from .checkpoint import atomic_file

OPSET = 17
# Per cell: ONNX's operator, our row blocks of W in ONNX's gate order (LSTM: our a, i, f, o
# as i, o, f, c; GRU: our n, r, z as z, r, h), which are also the blocks of b that make Wb
# (b's first blocks bias W's rows), our blocks of b that make Rb in that order (-1: zero),
# and the operator's attributes.
_ONNX = {"lstm": ("LSTM", [1, 3, 2, 0], [-1] * 4, {}),
         "rnn": ("RNN", [0], [-1], {}),
         "rnn_relu": ("RNN", [0], [-1], {"activations": ["Relu"]}),       # per direction (doubled below)
         "gru": ("GRU", [2, 1, 0], [-1, -1, 3], {"linear_before_reset": 1})}


def _onnx():
    return v.optional("onnx", "ONNX export", "onnx", "the onnx package")


def _scale(scale, D, O):
    """scale's four vectors as float32, checked: finite, of sizes D, D, O, O, the stds > 0."""
    if not isinstance(scale, (tuple, list)) or len(scale) != 4:
        raise TypeError("scale must be (mean_x, std_x, mean_y, std_y)")
    out = []
    for name, a, k in zip(("mean_x", "std_x", "mean_y", "std_y"), scale, (D, D, O, O)):
        a = np.asarray(a, np.float64)
        if a.shape != (k,) or not np.isfinite(a).all() or np.abs(a).max(initial=0) > np.finfo(np.float32).max:
            raise ValueError(f"scale's {name} must be {k} finite float32 numbers, got "
                             + (str(a.tolist())[:200] if a.shape == (k,) else f"shape {a.shape}"))
        if name.startswith("std") and not (a > 0).all():
            raise ValueError(f"scale's {name} must be > 0")
        out.append(a.astype(np.float32))
    return out


def export_onnx(model, path, *, streaming=False, scale=None):
    """Write `model` (a fastlstm.Model) to `path` as an ONNX graph (opset 17), checked with
    onnx.checker. Returns the onnx.ModelProto.

    Refuses (ValueError) what ONNX Runtime, the reference runtime, cannot run as the same
    model: a float64 model (ONNX Runtime's recurrent operators run float32 only), and the
    streaming graph of a bidirectional model (which cannot stream). A bidirectional layer is
    one node with direction="bidirectional" (with projections: a Scan per direction); a
    model with an embedding takes int64 token ids x (T, B) (batch_first: (B, T); streaming:
    (B,)) and gathers E's rows first; dropout is a training matter and leaves no trace.

    scale = (mean_x (D,), std_x (D,), mean_y (O,), std_y (O,)): the graph takes x in its own
    units and gives predictions in theirs, (x - mean_x) / std_x in and P · std_y + mean_y
    out, for an mse model on vectors (a `fastlstm train --data` series: `fastlstm export`
    passes its standardisation, data.series_scale)."""
    from .model import Model
    if not isinstance(model, Model):           # a bare LSTM stack has no head to export
        raise TypeError(f"export_onnx takes a fastlstm.Model, got {type(model).__name__}")
    streaming = v.boolean("streaming", streaming)         # "no" is truthy: it wrote the streaming graph
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    if model.dtype != np.float32:
        raise ValueError(f"this model is {model.dtype}; ONNX Runtime's recurrent operators run float32 "
                         "only, so the export would not run there. Export a float32 copy: "
                         "export_onnx(model.astype(np.float32), path), or fastlstm export CKPT OUT --float32")
    core, lstm = model.core, model.cell == "lstm"
    if streaming and core.bidirectional:
        raise ValueError("a bidirectional model cannot stream (its reverse direction needs each whole sequence); "
                         "export the sequence graph (streaming=False; fastlstm export without --streaming)")
    Lyr, H, Hr, O, dirs = core.num_states, core.hidden_size, core.Hr, model.output_size, core.directions
    tokens = model.vocab_size is not None
    if scale is not None:
        if tokens or model.loss != "mse":
            raise ValueError("scale applies to an mse model on vectors (token ids and class probabilities have no units)")
        scale = _scale(scale, core.input_size, O)
    f32 = TensorProto.FLOAT
    nodes, inits, made = [], [], {}

    def const(name, a):
        """An initializer, made once: a second call with the same name and value reuses it."""
        a = np.array(a, order="C")                                          # (0-d stays 0-d)
        if name in made:
            assert np.array_equal(made[name], a) and made[name].dtype == a.dtype, name
        else:
            made[name] = a
            inits.append(numpy_helper.from_array(a, name))
        return name

    def node(op, ins, outs, into=nodes, **attrs):
        into.append(helper.make_node(op, ins, outs, **attrs))
        return outs[0] if len(outs) == 1 else outs

    x_type, x_dims = (TensorProto.INT64, []) if tokens else (f32, [core.input_size])   # token ids, or vectors
    swap = model.batch_first and not streaming             # x (B, T, ·) in, time-major within, as Model does
    x_raw = node("Div", [node("Sub", ["x", const("mean_x", scale[0])], ["x_centred"]), const("std_x", scale[1])],
                 ["x_scaled"]) if scale else "x"
    x_in = node("Transpose", [x_raw], ["x_tm"], perm=[1, 0, 2][:2 + (not tokens)]) if swap else x_raw
    if tokens:                                                                 # x_t = E[id_t]
        node("Gather", [const("E", model.E.copy()), x_in], ["x_vec"], axis=0)
    x_vec = "x_vec" if tokens else x_in
    if streaming:
        inputs = [helper.make_tensor_value_info("x", x_type, ["B", *x_dims]),
                  helper.make_tensor_value_info("h", f32, [Lyr, "B", Hr])]
        if lstm:
            inputs.append(helper.make_tensor_value_info("c", f32, [Lyr, "B", H]))
        X = node("Unsqueeze", [x_vec, const("axis0", np.array([0]))], ["x_seq"])
        h0, c0, lens = "h", "c" if lstm else None, ""
    else:
        inputs = [helper.make_tensor_value_info("x", x_type, ["B", "T"][::1 if swap else -1] + x_dims),
                  helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]),
                  helper.make_tensor_value_info("h0", f32, [Lyr, "B", Hr])]
        if lstm:
            inputs.append(helper.make_tensor_value_info("c0", f32, [Lyr, "B", H]))
        # h0, c0 are optional: zeros of shape (layers, 1, width) by default, expanded to B
        shape_x = node("Shape", [x_in], ["shape_x"])
        B = node("Slice", [shape_x, const("one", np.array([1])), const("two", np.array([2]))], ["B"])
        for name, width in (("h0", Hr), ("c0", H))[:1 + lstm]:
            const(name, np.zeros((Lyr, 1, width), np.float32))
            to = node("Concat", [const(f"layers_{name}", np.array([Lyr])), B,
                                 const(f"width_{name}", np.array([width]))], [f"shape_{name}"], axis=0)
            node("Expand", [name, to], [f"{name}_b"])
        X, h0, c0, lens = x_vec, "h0_b", "c0_b" if lstm else None, "sequence_lens"

    hs, cs = [], []
    op, rows, rb, attrs = _ONNX[model.cell]
    attrs = {k: a * dirs if isinstance(a, list) else a for k, a in attrs.items()}      # one per direction
    live3 = None
    if not streaming and (core.proj_size or model.output == "every"):     # (T, B, 1): t within row b's length
        T = node("Slice", [shape_x, const("zero", np.array([0])), "one"], ["T"])
        steps = node("Range", [const("start", np.array(0, np.int32)), node("Cast", [node("Squeeze", [T], ["T0"])], ["Ti"],
                     to=TensorProto.INT32), const("step", np.array(1, np.int32))], ["steps"])
        live = node("Less", [node("Unsqueeze", [steps, const("axis1", np.array([1]))], ["steps_col"]),
                             node("Unsqueeze", ["sequence_lens", const("axis0", np.array([0]))], ["lens_row"])], ["live"])
        live3 = node("Unsqueeze", [live, const("axis2", np.array([2]))], ["live3"])
    if core.proj_size and not streaming:
        const("zero_f", np.array(0, np.float32))                 # a projected layer's output past a length
        if dirs > 1:
            node("Cast", ["sequence_lens"], ["lens64"], to=TensorProto.INT64)    # ReverseSequence takes int64

    def bias(u, blocks):                         # the blocks of u.b (-1: zeros), (len(blocks)·H,)
        b = np.concatenate([u.b.reshape(-1, H), np.zeros((1, H), u.b.dtype)])
        return b[blocks].reshape(-1)

    def projected(l, X, hl, cl, units):
        """Layer l with projections, which ONNX's LSTM lacks: per direction a Scan over the
        steps whose body is the cell (gates a, i, f, o as fastlstm orders them) and
        h = W_hr (o ⊙ tanh c), its state held and its output zero past each row's length;
        the reverse direction runs on each row's own steps reversed (ReverseSequence), as
        fastlstm's does. Returns y (T, B, dirs·P); Yh{l}, Yc{l} are (dirs, B, P), (dirs, B, H)."""
        ys = []
        for d, u in enumerate(units):
            p, D, body = f"l{l}d{d}_", u.D, []
            Xd = X if d == 0 else node("ReverseSequence", [X, "lens64"], [f"{p}x"], batch_axis=1, time_axis=0)
            Wx, Wh, b, Rt = (const(p + n, a.copy()) for n, a in (("Wx", u.W[:, :D].T), ("Wh", u.W[:, D:].T),
                                                                ("b", u.b), ("Rt", u.R.T)))

            def cell(kind, *ins, **attrs):                # a node of the body, named by its place there
                return node(kind, list(ins), [f"{p}{len(body)}"], body, **attrs)
            z = cell("Add", cell("Add", cell("MatMul", p + "xt", Wx), cell("MatMul", p + "h", Wh)), b)
            a, i, f, o = node("Split", [z], [p + g for g in "aifo"], body, axis=1)
            c2 = cell("Add", cell("Mul", cell("Sigmoid", f), p + "c"), cell("Mul", cell("Sigmoid", i), cell("Tanh", a)))
            h2 = cell("MatMul", cell("Mul", cell("Sigmoid", o), cell("Tanh", c2)), Rt)
            # past its length a row keeps its state (h, c) and outputs zero
            outs = [cell("Where", p + "live", new, old) if live3 else cell("Identity", new)
                    for new, old in ((h2, p + "h"), (c2, p + "c"), (h2, "zero_f"))]
            ins = [helper.make_tensor_value_info(p + "h", f32, ["B", Hr]),
                   helper.make_tensor_value_info(p + "c", f32, ["B", H]),
                   helper.make_tensor_value_info(p + "xt", f32, ["B", D])]
            if live3:
                ins.append(helper.make_tensor_value_info(p + "live", TensorProto.BOOL, ["B", 1]))
            graph = helper.make_graph(body, f"{p}cell", ins, [helper.make_tensor_value_info(n, f32, None)
                                                              for n in outs])
            at = const(f"{p}at", np.array(d))
            node("Scan", [node("Gather", [hl, at], [f"{p}h0"], axis=0), node("Gather", [cl, at], [f"{p}c0"], axis=0),
                          Xd] + ([live3] if live3 else []),
                 [f"{p}hn", f"{p}cn", f"{p}Y"], body=graph, num_scan_inputs=1 + bool(live3))
            ys.append(f"{p}Y" if d == 0 else node("ReverseSequence", [f"{p}Y", "lens64"], [f"{p}Yn"], batch_axis=1,
                                                  time_axis=0))
        axis0 = const("axis0", np.array([0]))
        for name, kind in ((f"Yh{l}", "hn"), (f"Yc{l}", "cn")):
            node("Concat", [node("Unsqueeze", [f"l{l}d{d}_{kind}", axis0], [f"l{l}d{d}_{kind}1"])
                            for d in range(dirs)], [name], axis=0)
        return ys[0] if dirs == 1 else node("Concat", ys, [f"y{l}"], axis=2)

    for l in range(core.num_layers):
        units = core.layers[l * dirs:(l + 1) * dirs]           # forward, then reverse: ONNX's direction order
        D = units[0].D
        at = [const(f"l{l}", np.array([l * dirs])), const(f"l{l}_end", np.array([(l + 1) * dirs]))]
        hl = node("Slice", [h0, *at], [f"h0_{l}"])
        cl = node("Slice", [c0, *at], [f"c0_{l}"]) if lstm else ""
        hs.append(f"Yh{l}")
        if lstm:
            cs.append(f"Yc{l}")
        if core.proj_size:
            X = projected(l, X, hl, cl, units)
            continue
        W = np.stack([u.W.reshape(-1, H, D + H)[rows].reshape(-1, D + H) for u in units])
        Wn, Rn = const(f"W{l}", W[:, :, :D]), const(f"R{l}", W[:, :, D:])
        Bn = const(f"B{l}", np.stack([np.concatenate([bias(u, rows), bias(u, rb)]) for u in units]))
        outs = [f"Y{l}", f"Yh{l}"] + ([f"Yc{l}"] if lstm else [])
        node(op, [X, Wn, Rn, Bn, lens, hl] + ([cl] if lstm else []), outs, hidden_size=H,
             direction="bidirectional" if dirs > 1 else "forward", **attrs)
        if dirs == 1:
            X = node("Squeeze", [f"Y{l}", const(f"axis1_{l}", np.array([1]))], [f"y{l}"])   # (T, B, H)
        else:                                    # Y (T, 2, B, H) -> (T, B, 2H): [forward ; reverse]
            X = node("Reshape", [node("Transpose", [f"Y{l}"], [f"Yt{l}"], perm=[0, 2, 1, 3]),
                                 const(f"TB2H{l}", np.array([0, 0, dirs * H]))], [f"y{l}"])

    if model.output == "last" or streaming:                  # (B, H·directions): each direction's final h
        top = node("Reshape", [node("Transpose", [hs[-1]], ["Yh_top"], perm=[1, 0, 2]),
                               const("B2H", np.array([0, dirs * Hr]))], ["h_top"])
    else:
        top = X                                                                           # (T, B, H·directions)
    z = node("Add", [node("MatMul", [top, const("Vt", model.V.T.copy())], ["hV"]), const("bias", model.bias.copy())],
             ["logits" if model.loss == "xent" else "values"])
    P = node("Softmax", [z], ["probs"], axis=-1) if model.loss == "xent" else z
    if scale:                                                                             # in y's units
        P = node("Add", [node("Mul", [P, const("std_y", scale[3])], ["P_scaled"]), const("mean_y", scale[2])],
                 ["in_units"])
    if model.output == "every" and not streaming:                                         # zero past lengths
        P = node("Mul", [P, node("Cast", [live3], ["mask"], to=f32)], ["masked"])
        if swap:
            P = node("Transpose", [P], ["masked_bt"], perm=[1, 0, 2])
    node("Identity", [P], ["predictions"])
    h_out, c_out = ("h_out", "c_out") if streaming else ("hn", "cn")
    node("Concat", hs, [h_out], axis=0)
    pred_shape = (["B", "T"][::1 if swap else -1] + [O]) if model.output == "every" and not streaming else ["B", O]
    outputs = [helper.make_tensor_value_info("predictions", f32, pred_shape),
               helper.make_tensor_value_info(h_out, f32, [Lyr, "B", Hr])]
    if lstm:
        node("Concat", cs, [c_out], axis=0)
        outputs.append(helper.make_tensor_value_info(c_out, f32, [Lyr, "B", H]))
    graph = helper.make_graph(nodes, "fastlstm_step" if streaming else "fastlstm", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", OPSET)]
    # the least IR version opset 17 needs (8), not the newest this onnx writes (14 in 1.23),
    # which ONNX Runtime releases older than the onnx package refuse (1.23.2 reads up to 11)
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="fastlstm", producer_version=__version__)
    proto.doc_string = (f"fastlstm {model.cell} model: {model.config()}; "
                        + ("one streaming step" if streaming else "whole sequences"))
    onnx.checker.check_model(proto, full_check=True)
    with atomic_file(path, "the ONNX model") as f:       # onnx.save would take the temporary's fd for a path
        f.write(proto.SerializeToString())
    return proto
