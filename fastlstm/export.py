"""ONNX export: a Model as ONNX's own recurrent operators, checked by onnx.checker.

    fastlstm.export_onnx(model, "model.onnx")                  # whole sequences
    fastlstm.export_onnx(model, "step.onnx", streaming=True)   # one step, state in and out

The sequence graph takes x (T, B, D) float32 and sequence_lens (B,) int32, with T and B
dynamic, and optionally h0 and c0 (num_layers, B, H), which default to zeros. It gives
predictions ((B, O) for output="last", (T, B, O) for "every", zero past each length) and
the final states hn, cn. Each layer is one ONNX `LSTM`, `GRU` or `RNN` node. The head is MatMul
+ Add, with Softmax for xent. "last" reads the top layer's Y_h, which ONNX defines as h
at each row's last real step.

The streaming graph takes x (B, D), h and c (num_layers, B, H). It gives this step's
predictions and the new h, c: what Model.step does, for runtimes that keep no state.

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
         "gru": ("GRU", [2, 1, 0], [-1, -1, 3], {"linear_before_reset": 1})}


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise RuntimeError("ONNX export needs the onnx package: pip install 'fastlstm[onnx]'") from e
    return onnx


def export_onnx(model, path, *, streaming=False):
    """Write `model` (a fastlstm.Model) to `path` as an ONNX graph (opset 17), checked with
    onnx.checker. Returns the onnx.ModelProto.

    Refuses (ValueError) what ONNX Runtime, the reference runtime, cannot run as the same
    model: a float64 model (ONNX Runtime's recurrent operators run float32 only), and the
    streaming graph of a bidirectional model (which cannot stream), and a model with
    projections (proj_size), which ONNX's LSTM operator lacks. A bidirectional layer is
    one node with direction="bidirectional"; a model with an embedding takes int64 token ids
    x (T, B) (streaming: (B,)) and gathers E's rows first; dropout is a training matter and
    leaves no trace."""
    from .model import Model
    if not isinstance(model, Model):           # a bare LSTM stack has no head to export
        raise TypeError(f"export_onnx takes a fastlstm.Model, got {type(model).__name__}")
    streaming = v.boolean("streaming", streaming)         # "no" is truthy: it wrote the streaming graph
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    if model.dtype != np.float32:
        raise ValueError(f"this model is {model.dtype}; ONNX Runtime's recurrent operators run float32 "
                         "only, so the export would not run there. Export a float32 copy: "
                         "m32 = fastlstm.Model(..., dtype=np.float32); m32.params[:] = model.params")
    core, lstm = model.core, model.cell == "lstm"
    if core.proj_size:
        raise ValueError("ONNX's LSTM operator has no projection (proj_size): a model with proj_size cannot be "
                         "exported as ONNX LSTM nodes")
    if streaming and core.bidirectional:
        raise ValueError("a bidirectional model cannot stream (its reverse direction needs each whole sequence); "
                         "export the sequence graph (streaming=False)")
    Lyr, H, O, dirs = core.num_states, core.hidden_size, model.output_size, core.directions
    tokens = model.vocab_size is not None
    f32 = TensorProto.FLOAT
    nodes, inits = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, **attrs))
        return outs[0] if len(outs) == 1 else outs

    x_type, x_dims = (TensorProto.INT64, []) if tokens else (f32, [core.input_size])   # token ids, or vectors
    if tokens:                                                                 # x_t = E[id_t]
        node("Gather", [const("E", model.E.copy()), "x"], ["x_vec"], axis=0)
    x_vec = "x_vec" if tokens else "x"
    if streaming:
        inputs = [helper.make_tensor_value_info("x", x_type, ["B", *x_dims]),
                  helper.make_tensor_value_info("h", f32, [Lyr, "B", H])]
        if lstm:
            inputs.append(helper.make_tensor_value_info("c", f32, [Lyr, "B", H]))
        X = node("Unsqueeze", [x_vec, const("axis0", np.array([0]))], ["x_seq"])
        h0, c0, lens = "h", "c" if lstm else None, ""
    else:
        inputs = [helper.make_tensor_value_info("x", x_type, ["T", "B", *x_dims]),
                  helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]),
                  helper.make_tensor_value_info("h0", f32, [Lyr, "B", H])]
        if lstm:
            inputs.append(helper.make_tensor_value_info("c0", f32, [Lyr, "B", H]))
        # h0, c0 are optional: zeros of shape (layers, 1, H) by default, expanded to B
        const("h0", np.zeros((Lyr, 1, H), np.float32))
        if lstm:
            const("c0", np.zeros((Lyr, 1, H), np.float32))
        shape_x = node("Shape", ["x"], ["shape_x"])
        B = node("Slice", [shape_x, const("one", np.array([1])), const("two", np.array([2]))], ["B"])
        expand_to = node("Concat", [const("layers", np.array([Lyr])), B, const("H", np.array([H]))], ["state_shape"],
                         axis=0)
        node("Expand", ["h0", expand_to], ["h0_b"])
        if lstm:
            node("Expand", ["c0", expand_to], ["c0_b"])
        X, h0, c0, lens = x_vec, "h0_b", "c0_b" if lstm else None, "sequence_lens"

    hs, cs = [], []
    op, rows, rb, attrs = _ONNX[model.cell]

    def bias(u, blocks):                         # the blocks of u.b (-1: zeros), (len(blocks)·H,)
        b = np.concatenate([u.b.reshape(-1, H), np.zeros((1, H), u.b.dtype)])
        return b[blocks].reshape(-1)
    for l in range(core.num_layers):
        units = core.layers[l * dirs:(l + 1) * dirs]           # forward, then reverse: ONNX's direction order
        D = units[0].D
        W = np.stack([u.W.reshape(-1, H, D + H)[rows].reshape(-1, D + H) for u in units])
        Wn, Rn = const(f"W{l}", W[:, :, :D]), const(f"R{l}", W[:, :, D:])
        Bn = const(f"B{l}", np.stack([np.concatenate([bias(u, rows), bias(u, rb)]) for u in units]))
        at = [const(f"l{l}", np.array([l * dirs])), const(f"l{l}_end", np.array([(l + 1) * dirs]))]
        hl = node("Slice", [h0, *at], [f"h0_{l}"])
        ins = [X, Wn, Rn, Bn, lens, hl]
        if lstm:
            ins.append(node("Slice", [c0, *at], [f"c0_{l}"]))
        outs = [f"Y{l}", f"Yh{l}"] + ([f"Yc{l}"] if lstm else [])
        node(op, ins, outs, hidden_size=H, direction="bidirectional" if dirs > 1 else "forward", **attrs)
        hs.append(f"Yh{l}")
        if lstm:
            cs.append(f"Yc{l}")
        if dirs == 1:
            X = node("Squeeze", [f"Y{l}", const(f"axis1_{l}", np.array([1]))], [f"y{l}"])   # (T, B, H)
        else:                                    # Y (T, 2, B, H) -> (T, B, 2H): [forward ; reverse]
            X = node("Reshape", [node("Transpose", [f"Y{l}"], [f"Yt{l}"], perm=[0, 2, 1, 3]),
                                 const(f"TB2H{l}", np.array([0, 0, dirs * H]))], [f"y{l}"])

    if model.output == "last" or streaming:                  # (B, H·directions): each direction's final h
        top = node("Reshape", [node("Transpose", [hs[-1]], ["Yh_top"], perm=[1, 0, 2]),
                               const("B2H", np.array([0, dirs * H]))], ["h_top"])
    else:
        top = X                                                                           # (T, B, H·directions)
    z = node("Add", [node("MatMul", [top, const("Vt", model.V.T.copy())], ["hV"]), const("bias", model.bias.copy())],
             ["logits" if model.loss == "xent" else "values"])
    P = node("Softmax", [z], ["probs"], axis=-1) if model.loss == "xent" else z
    if model.output == "every" and not streaming:                                         # zero past lengths
        T = node("Slice", [shape_x, const("zero", np.array([0])), "one"], ["T"])
        steps = node("Range", [const("start", np.array(0, np.int32)), node("Cast", [node("Squeeze", [T], ["T0"])], ["Ti"],
                     to=TensorProto.INT32), const("step", np.array(1, np.int32))], ["steps"])
        live = node("Less", [node("Unsqueeze", [steps, const("axis1", np.array([1]))], ["steps_col"]),
                             node("Unsqueeze", ["sequence_lens", const("axis0", np.array([0]))], ["lens_row"])], ["live"])
        mask = node("Cast", [node("Unsqueeze", [live, const("axis2", np.array([2]))], ["live3"])], ["mask"], to=f32)
        P = node("Mul", [P, mask], ["masked"])
    node("Identity", [P], ["predictions"])
    h_out, c_out = ("h_out", "c_out") if streaming else ("hn", "cn")
    node("Concat", hs, [h_out], axis=0)
    pred_shape = ["T", "B", O] if model.output == "every" and not streaming else ["B", O]
    outputs = [helper.make_tensor_value_info("predictions", f32, pred_shape),
               helper.make_tensor_value_info(h_out, f32, [Lyr, "B", H])]
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
