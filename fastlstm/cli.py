"""The command line: `fastlstm train` runs the main job on a built-in task;
`fastlstm sample` generates text from a checkpoint of the text task; `fastlstm carousel`
measures how far back gradients reach in an RNN and two LSTMs."""
import argparse
import os
import signal
import sys
import time

import numpy as np

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
    t.add_argument("--cell", choices=["lstm", "rnn"], default="lstm", help="LSTM, or a vanilla tanh RNN to compare")
    t.add_argument("--steps", type=int, help="training steps in all (a resumed run counts those done)")
    t.add_argument("--batch", type=int, help="sequences per step")
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--clip", type=float, help="max global gradient norm (0: no clipping)")
    t.add_argument("--T", type=int, help="sequence length (adding, text)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
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


def train(args):
    import fastlstm
    from tqdm import tqdm

    d = DEFAULTS[args.task]
    for k, val in d.items():
        if getattr(args, k) is None:
            setattr(args, k, val)
    out = args.out or os.path.join("runs", f"{args.task}.ckpt")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if args.resume:
        model = fastlstm.load(out)
        task_cfg = model.extra["task"]
        if task_cfg["name"] != args.task:
            sys.exit(f"fastlstm: {out} was trained on task {task_cfg['name']!r}, not {args.task!r}")
        task = _make_task(args.task, task_cfg["T"])
        rng = np.random.default_rng()
        rng.bit_generator.state = model.extra["rng"]
        history = model.extra["history"]
    else:
        task = _make_task(args.task, args.T)
        opt = (fastlstm.Adam(lr=args.lr) if args.optimizer == "adam"
               else fastlstm.SGD(lr=args.lr, momentum=args.momentum))
        model = fastlstm.Model(task.input_size, args.hidden, task.output_size, args.layers,
                               cell=args.cell, loss=task.loss, output=task.output, dtype=args.dtype, seed=args.seed,
                               optimizer=opt, clip=args.clip or None)
        rng = np.random.default_rng(args.seed)
        history = []

    step, lead = model.train_step, True
    if args.distributed:
        from .distributed import DataParallel
        dp = DataParallel(model)
        step, lead = dp.train_step, dp.rank == 0
        args.quiet = args.quiet or not lead
        if lead:
            print(f"fastlstm: {dp.size} ranks, {dp.threads} threads each, batch {args.batch} split "
                  f"into shards of about {args.batch // dp.size}", flush=True)

    def save():
        if lead:
            model.save(out, extra=dict(task=dict(name=args.task, T=getattr(task, "T", None)),
                                       rng=rng.bit_generator.state, history=history))

    def say(text):
        if lead:
            print(text, flush=True)

    say(f"fastlstm: task {args.task}, {model.core.num_layers}x{model.core.hidden_size} {model.cell.upper()}, "
          f"{model.params.size} parameters, batch {args.batch}, {args.optimizer} lr {model.optimizer.lr}"
          + (f", baseline {task.baseline:.3f}" if hasattr(task, "baseline") else ""))
    start, t0, seen = model.steps, time.perf_counter(), 0
    bar = tqdm(total=args.steps, initial=start, disable=args.quiet, unit="step", dynamic_ncols=True)
    ema, solved = None, False
    interrupted = False
    prev = signal.getsignal(signal.SIGINT)
    try:
        while model.steps < args.steps:
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
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        signal.signal(signal.SIGINT, prev)
    save()
    wall = time.perf_counter() - t0
    if interrupted:
        say(f"fastlstm: interrupted at step {model.steps}; checkpoint saved to {out} (continue with --resume)")
        return 130
    m = history[-1] if history and history[-1]["step"] == model.steps else dict(task.metrics(model))
    say(f"fastlstm: {model.steps - start} steps in {wall:.1f} s; "
        + ", ".join(f"{k} {val:.4f}" for k, val in m.items() if k not in ("step", "seconds"))
        + f"; {'solved' if solved or task.solved(m) else 'not solved yet'}; checkpoint {out}")
    return 0


def sample(args):
    import fastlstm
    from .tasks import Text
    model = fastlstm.load(args.checkpoint)
    if model.extra.get("task", {}).get("name") != "text":
        sys.exit(f"fastlstm: {args.checkpoint} is not a checkpoint of the text task")
    if args.temperature <= 0 or args.length < 0:
        sys.exit("fastlstm: --temperature must be > 0 and --length >= 0")
    task = Text(T=model.extra["task"]["T"])
    rng = np.random.default_rng(args.seed)
    try:
        x = task.encode(args.prime or "\n", model.dtype)
    except ValueError as e:
        sys.exit(f"fastlstm: {e}")
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


def carousel(args):
    from . import carousel as cr
    if args.T < 2 or args.hidden < 1 or args.batch < 1 or args.train < 0:
        sys.exit("fastlstm: --T must be >= 2, --hidden and --batch >= 1, --train >= 0")
    results = cr.run(T=args.T, hidden=args.hidden, batch=args.batch, seed=args.seed, train_steps=args.train)
    print(f"Gradient norm w.r.t. the state k steps before a loss at the last step (T = {args.T}, "
          f"H = {args.hidden}, {'after training' if args.train else 'untrained'}), relative to k = 1:\n")
    print(cr.table(results, args.T))
    if args.plot:
        cr.plot(results, args.T, args.plot)
        print(f"\nplot written to {args.plot}")
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return {"train": train, "sample": sample, "carousel": carousel}[args.command](args)
    except (ValueError, TypeError, OSError, RuntimeError) as e:   # bad options or files: a message, not a traceback
        print(f"fastlstm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
