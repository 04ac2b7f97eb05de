"""The command line: `fastlstm train` runs the main job on a built-in task;
`fastlstm sample` generates text from a checkpoint of the text task; `fastlstm export`
writes a checkpoint's model as ONNX; `fastlstm carousel` measures how far back gradients
reach in an RNN and two LSTMs.

Only the standard library loads before main() has installed its Ctrl-C handler
(`_Interrupt`); NumPy, Numba and the kernels load after it."""
import argparse
import os
import signal
import sys
import threading
import time

from . import choices

# Defaults per task: tuned so that each reaches its figure of merit on 2 cores within minutes.
DEFAULTS = {
    "adding": dict(hidden=64, layers=1, steps=3000, batch=64, lr=1e-2, clip=1.0, eval_every=100, T=100),
    "text": dict(hidden=256, layers=1, steps=2000, batch=32, lr=2e-3, clip=1.0, eval_every=250, T=64),
    "digits": dict(hidden=64, layers=1, steps=600, batch=64, lr=1e-2, clip=1.0, eval_every=100, T=None),
}


def _parser():
    p = argparse.ArgumentParser(prog="fastlstm", description="A compact, fast LSTM training engine.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on a built-in task (default: the adding problem)",
                       description="Train an LSTM on a built-in task, with a progress bar, periodic "
                       "evaluation and checkpoints. Ctrl-C saves a checkpoint and exits.")
    t.add_argument("--task", choices=sorted(DEFAULTS), default="adding")
    t.add_argument("--hidden", type=int, help="hidden units per layer")
    t.add_argument("--layers", type=int, help="recurrent layers")
    t.add_argument("--cell", choices=choices.CELLS, default="lstm", help="LSTM, or a vanilla tanh RNN to compare")
    t.add_argument("--steps", type=int, help="training steps in all (a resumed run counts those done)")
    t.add_argument("--batch", type=int, help="sequences per step")
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument("--optimizer", choices=choices.OPTIMIZERS, default="adam")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--clip", type=float, help="max global gradient norm (0: no clipping)")
    t.add_argument("--T", type=int, help="sequence length (adding, text)")
    t.add_argument("--dtype", choices=choices.DTYPES, default="float32")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints")
    t.add_argument("--full", action="store_true", help="run all steps even once the task is solved")
    t.add_argument("--out", help="checkpoint path (default runs/TASK.ckpt)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: mpiexec -n N python -m mpi4py -m fastlstm train --distributed")
    c = sub.add_parser("carousel", help="gradient flow: RNN vs LSTM (forget bias 0 and 1)",
                       description="Compare how far back the gradient of a loss at the last step "
                       "reaches in an RNN, an LSTM with forget bias 0 and one with forget bias 1.")
    c.add_argument("--T", type=int, default=200, help="sequence length")
    c.add_argument("--hidden", type=int, default=64)
    c.add_argument("--batch", type=int, default=32)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--train", type=int, default=0, metavar="STEPS",
                   help="first train each model on the adding problem at T for up to STEPS steps")
    c.add_argument("--plot", metavar="PNG", help="also write a plot (needs matplotlib)")
    e = sub.add_parser("export", help="write a checkpoint's model as an ONNX graph",
                       description="Write the model of a checkpoint as ONNX's own LSTM/RNN operators "
                       "(opset 17), checked by onnx.checker. Needs the onnx extra.")
    e.add_argument("checkpoint")
    e.add_argument("out", help="the .onnx file to write")
    e.add_argument("--streaming", action="store_true", help="a one-step graph whose state goes in and comes out")
    s = sub.add_parser("sample", help="generate text from a text-task checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("--length", type=int, default=300)
    s.add_argument("--prime", default="The ")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--seed", type=int, default=0)
    return p


def _make_task(name, T):
    from .tasks import TASKS
    return TASKS[name]() if T is None else TASKS[name](T=T)


class UsageError(Exception):
    """A bad option or file, reported as `fastlstm: error: ...` with exit status 2."""


class _Interrupt:
    """The SIGINT handler of the command line.

    Until training starts it raises KeyboardInterrupt at once: nothing is saved yet, and
    main() reports it. Once the loop runs (`defer()`), the first Ctrl-C only sets
    `requested`, which the loop reads between steps, so that a batch draw, its step and the
    counters are one unit and the checkpoint written then is a state an uninterrupted run
    passes through (resume is bitwise). A second Ctrl-C stops at once; the last checkpoint
    written stays as it was. `saved` says what is on disk, for main()'s last message."""

    def __init__(self):
        self.deferred = self.requested = False
        self.saved = None                    # (path, step) of the last checkpoint written

    def defer(self):
        self.deferred = True

    def __call__(self, signum, frame):
        if self.deferred and not self.requested:
            self.requested = True            # os.write: a print here could re-enter stderr's buffer
            os.write(2, b"\nfastlstm: stopping after this step (Ctrl-C again to stop at once)\n")
            return
        raise KeyboardInterrupt


def _resume(out, task_name):
    """(model, task, rng, history) from the checkpoint at out, written by `fastlstm train`."""
    import numpy as np

    import fastlstm
    model = fastlstm.load(out)
    run = model.extra
    if not isinstance(run.get("task"), dict) or "name" not in run["task"] or "rng" not in run:
        raise UsageError(f"{out} was not written by `fastlstm train` (it records no task and data "
                         "stream), so --resume cannot continue it")
    if run["task"]["name"] != task_name:
        raise UsageError(f"{out} was trained on task {run['task']['name']!r}, not {task_name!r} "
                         f"(pass --task {run['task']['name']})")
    task = _make_task(task_name, run["task"].get("T"))
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = run["rng"]
    except (TypeError, ValueError, KeyError) as e:
        raise UsageError(f"{out}: its data stream state is unusable ({e})") from None
    history = run.get("history", [])
    if not isinstance(history, list):
        raise UsageError(f"{out}: its history is not a list")
    return model, task, rng, history


def train(args, interrupt):
    import numpy as np
    from tqdm import tqdm

    import fastlstm

    d = DEFAULTS[args.task]
    for k, val in d.items():
        if getattr(args, k) is None:
            setattr(args, k, val)
    out = args.out or os.path.join("runs", f"{args.task}.ckpt")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if args.resume:
        model, task, rng, history = _resume(out, args.task)
        interrupt.saved = (out, model.steps)
    else:
        task = _make_task(args.task, args.T)
        opt = (fastlstm.Adam(lr=args.lr) if args.optimizer == "adam"
               else fastlstm.SGD(lr=args.lr, momentum=args.momentum))
        model = fastlstm.Model(task.input_size, args.hidden, task.output_size, args.layers,
                               cell=args.cell, loss=task.loss, output=task.output, dtype=args.dtype, seed=args.seed,
                               optimizer=opt, clip=args.clip or None)
        rng = np.random.default_rng(args.seed)
        history = []

    step, lead, stop = model.train_step, True, lambda: interrupt.requested
    if args.distributed:
        from .distributed import DataParallel
        dp = DataParallel(model)
        step, lead = dp.train_step, dp.rank == 0
        stop = lambda: dp.any(interrupt.requested)          # noqa: E731  (every rank stops at one step)
        args.quiet = args.quiet or not lead
        if lead:
            print(f"fastlstm: {dp.size} ranks, {dp.threads} threads each, batch {args.batch} split "
                  f"into shards of about {args.batch // dp.size}", flush=True)

    def save():
        if lead:
            model.save(out, extra=dict(task=dict(name=args.task, T=getattr(task, "T", None)),
                                       rng=rng.bit_generator.state, history=history))
            interrupt.saved = (out, model.steps)

    def say(text):
        if lead:
            print(text, flush=True)

    say(f"fastlstm: task {args.task}, {model.core.num_layers}x{model.core.hidden_size} {model.cell.upper()}, "
        f"{model.params.size} parameters, batch {args.batch}, {args.optimizer} lr {model.optimizer.lr}"
        + (f", baseline {task.baseline:.3f}" if hasattr(task, "baseline") else ""))
    start, t0, seen = model.steps, time.perf_counter(), 0
    bar = tqdm(total=args.steps, initial=start, disable=args.quiet, unit="step", dynamic_ncols=True)
    ema, solved = None, False
    interrupt.defer()
    try:
        while model.steps < args.steps and not stop():
            x, y, lengths = task.batch(rng, args.batch, model.dtype)
            loss = step(x, y, lengths)
            seen += args.batch
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}", seq_s=f"{seen / (time.perf_counter() - t0):.0f}")
            if model.steps % args.eval_every == 0 or model.steps == args.steps:
                m = task.metrics(model)
                history.append(dict(step=model.steps, seconds=round(time.perf_counter() - t0, 2), **m))
                if lead:
                    bar.write(f"step {model.steps}: " + ", ".join(f"{k} {val:.4f}" for k, val in m.items()))
                save()
                if task.solved(m):
                    solved = True
                    if not args.full:
                        break
    finally:
        bar.close()
    save()
    if args.distributed:
        dp.comm.Barrier()        # no rank exits (mpi4py aborts the job on status 130) during rank 0's save
    wall = time.perf_counter() - t0
    if interrupt.requested:
        say(f"fastlstm: interrupted at step {model.steps}; checkpoint saved to {out} (continue with --resume)")
        return 130
    m = history[-1] if history and history[-1]["step"] == model.steps else dict(task.metrics(model))
    say(f"fastlstm: {model.steps - start} steps in {wall:.1f} s; "
        + ", ".join(f"{k} {val:.4f}" for k, val in m.items() if k not in ("step", "seconds"))
        + f"; {'solved' if solved or task.solved(m) else 'not solved yet'}; checkpoint {out}")
    return 0


def sample(args, interrupt):
    import numpy as np

    import fastlstm
    from .tasks import Text
    if not (args.temperature > 0 and np.isfinite(args.temperature)) or args.length < 0:
        raise UsageError("--temperature must be a finite number > 0 and --length >= 0")
    model = fastlstm.load(args.checkpoint)
    task_cfg = model.extra.get("task")
    if not isinstance(task_cfg, dict) or task_cfg.get("name") != "text":
        raise UsageError(f"{args.checkpoint} is not a checkpoint of the text task")
    task = Text(T=task_cfg["T"])
    rng = np.random.default_rng(args.seed)
    x = task.encode(args.prime or "\n", model.dtype)
    model.reset_state(1)
    for t in range(len(x)):
        p = model.step(x[t])[0]
    out = [args.prime]
    for _ in range(args.length):
        logp = np.log(np.maximum(p.astype(np.float64), 1e-30)) / args.temperature
        q = np.exp(logp - logp.max())
        k = rng.choice(len(q), p=q / q.sum())
        out.append(task.vocab[k])
        xt = np.zeros((1, len(task.vocab)), model.dtype)
        xt[0, k] = 1
        p = model.step(xt)[0]
    print("".join(out))
    return 0


def export(args, interrupt):
    import fastlstm
    fastlstm.export_onnx(fastlstm.load(args.checkpoint), args.out, streaming=args.streaming)
    print(f"fastlstm: wrote {args.out} ({'one streaming step' if args.streaming else 'whole sequences'})")
    return 0


def carousel(args, interrupt):
    from . import carousel as cr
    if args.T < 2 or args.hidden < 1 or args.batch < 1 or args.train < 0:
        raise UsageError("--T must be >= 2, --hidden and --batch >= 1, --train >= 0")
    results = cr.run(T=args.T, hidden=args.hidden, batch=args.batch, seed=args.seed, train_steps=args.train)
    print(f"Gradient norm w.r.t. the state k steps before a loss at the last step (T = {args.T}, "
          f"H = {args.hidden}, {'after training' if args.train else 'untrained'}), relative to k = 1:\n")
    print(cr.table(results, args.T))
    if args.plot:
        cr.plot(results, args.T, args.plot)
        print(f"\nplot written to {args.plot}")
    return 0


def main(argv=None, *, restore_handler=True):
    """Run a command; returns the exit status: 0, 2 for bad options or files (a
    `fastlstm: error:` line, never a traceback), 130 when interrupted (Ctrl-C).

    restore_handler=False (the `fastlstm` command itself) ignores SIGINT once the command
    is done instead of restoring Python's handler, which would raise KeyboardInterrupt
    while the process exits."""
    interrupt, previous = _Interrupt(), None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, interrupt)
    try:
        args = _parser().parse_args(argv)
        status = {"train": train, "sample": sample, "export": export, "carousel": carousel}[args.command](args, interrupt)
        return 130 if interrupt.requested else status
    except KeyboardInterrupt:
        kept = (f"the checkpoint {interrupt.saved[0]} (step {interrupt.saved[1]}) is kept"
                if interrupt.saved else "no checkpoint was written")
        print(f"\nfastlstm: interrupted; {kept}", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, OSError, RuntimeError, ArithmeticError, MemoryError) as e:
        # bad options, files or data: a message, not a traceback (NonFiniteError is an ArithmeticError)
        kept = f" (the checkpoint {interrupt.saved[0]} holds step {interrupt.saved[1]})" if interrupt.saved else ""
        print(f"fastlstm: error: {e}{kept}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous if restore_handler else signal.SIG_IGN)


def run():
    """The `fastlstm` command (console script and `python -m fastlstm`)."""
    sys.exit(main(restore_handler=False))


if __name__ == "__main__":
    run()
