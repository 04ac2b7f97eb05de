"""Data-parallel training over MPI: ranks agree with one process, failures abort, checkpoints
move between distributed and single-process runs. Every MPI run has a timeout."""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlstm

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install mpich)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mpi(n, *args, timeout=120):
    return subprocess.run([MPIEXEC, "-n", str(n), *args], capture_output=True, text=True, timeout=timeout)


def _script(tmp_path, body):
    p = tmp_path / "job.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


def _batches(output, steps=6, T=8, B=8, D=3, O=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        x = rng.standard_normal((T, B, D))
        lengths = rng.integers(1, T + 1, B)
        if output == "last":
            y = rng.standard_normal((B, O))
        else:
            y = rng.integers(0, O, (T, B))
        out.append((x, y, lengths))
    return out


CASES = {"last": dict(loss="mse", output="last"), "every": dict(loss="xent", output="every"),
         # each rank's rows draw the whole batch's dropout masks (rank 1's rows drew rank 0's: its
         # shard's rows were keyed from 0, so the two halves of a batch shared their masks)
         "dropout": dict(loss="mse", output="last", dropout=0.4)}


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_with_half_batches_equal_one_rank_with_the_whole(tmp_path, case):
    """float64, Adam, clipping, lengths. The ranks' gradients are summed in another order than
    one process sums them (δW over B/2 rows, then across ranks), so the parameters agree to
    rounding, not bitwise: |difference| <= 1e-12 after 6 steps (float64 eps is 2.2e-16, and
    each step's update is O(lr) = 1e-2)."""
    job = _script(tmp_path, f"""
        import numpy as np, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import fastlstm
        from fastlstm.distributed import DataParallel
        from test_distributed import _batches, CASES
        m = fastlstm.Model(3, 5, 3, 2, dtype=np.float64, seed=1, clip=0.5,
                           optimizer=fastlstm.Adam(lr=1e-2), **CASES[{case!r}])
        dp = DataParallel(m, check_every=2)
        losses = [dp.train_step(x, y, L) for x, y, L in _batches(CASES[{case!r}]["output"])]
        dp.check_identical()
        if dp.rank == 0:
            np.save({str(tmp_path / "params.npy")!r}, m.params)
            np.save({str(tmp_path / "losses.npy")!r}, losses)
    """)
    r = _mpi(2, sys.executable, "-m", "mpi4py", job)
    assert r.returncode == 0, r.stdout + r.stderr
    single = fastlstm.Model(3, 5, 3, 2, dtype=np.float64, seed=1, clip=0.5,
                            optimizer=fastlstm.Adam(lr=1e-2), **CASES[case])
    losses = [single.train_step(x, y, L) for x, y, L in _batches(CASES[case]["output"])]
    d = np.max(np.abs(np.load(tmp_path / "params.npy") - single.params))
    assert d <= 1e-12, f"2 ranks vs 1: max |difference| {d:.3g}"
    # train_step returns the global batch's mean loss (what the progress bar shows), not a shard's
    assert np.allclose(np.load(tmp_path / "losses.npy"), losses, rtol=1e-12, atol=0)


def _random_case(seed):
    """A random model (cell, layers, bidirectional, dropout, projections, token ids, output,
    loss, batch_first, optimizer, clip) and three batches for it, lengths or none."""
    rng = np.random.default_rng(seed)
    cell, layers = str(rng.choice(["lstm", "gru", "rnn", "rnn_relu"])), int(rng.integers(1, 4))
    kw = dict(cell=cell, num_layers=layers, bidirectional=bool(rng.random() < 0.4),
              dropout=float(rng.choice([0.0, 0.3])) if layers > 1 else 0.0,
              proj_size=int(rng.integers(1, 4)) if cell == "lstm" and rng.random() < 0.3 else 0,
              output=str(rng.choice(["last", "every"])), loss=str(rng.choice(["mse", "xent"])),
              batch_first=bool(rng.random() < 0.5), dtype=np.float64, seed=seed,
              optimizer=str(rng.choice(["adam", "sgd"])), clip=float(rng.choice([0.5, 1e9])),
              vocab_size=int(rng.integers(3, 9)) if rng.random() < 0.3 else None)
    D, H, O, T, B = (int(rng.integers(a, b)) for a, b in ((1, 5), (4, 8), (2, 4), (1, 7), (2, 9)))
    batches = []
    for _ in range(3):
        x = rng.integers(0, kw["vocab_size"], (T, B)) if kw["vocab_size"] else rng.standard_normal((T, B, D))
        lengths = rng.integers(1, T + 1, B) if rng.random() < 0.7 else None
        lead = (B,) if kw["output"] == "last" else (T, B)
        y = rng.standard_normal(lead + (O,)) if kw["loss"] == "mse" else rng.integers(0, O, lead)
        if kw["batch_first"]:
            x = np.ascontiguousarray(x.swapaxes(0, 1))
            y = np.ascontiguousarray(y.swapaxes(0, 1)) if kw["output"] == "every" else y
        batches.append((x, y, lengths))
    return (D, H, O), kw, batches


def test_random_models_train_on_two_ranks_as_in_one_process(tmp_path):
    """32 random models (_random_case). A batch_first model's per-step targets were refused
    ("y must be C-contiguous") by an early version of the whole-batch check."""
    job = _script(tmp_path, f"""
        import numpy as np, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import fastlstm
        from fastlstm.distributed import DataParallel
        from test_distributed import _random_case
        out = {{}}
        for seed in range(32):
            sizes, kw, batches = _random_case(seed)
            m = fastlstm.Model(*sizes, **kw)
            dp = DataParallel(m, check_every=1, set_threads=False)
            out[f"loss{{seed}}"] = [dp.train_step(*b) for b in batches]
            out[f"params{{seed}}"] = m.params
        if dp.rank == 0:
            np.savez({str(tmp_path / "out.npz")!r}, **out)
    """)
    r = _mpi(2, sys.executable, "-m", "mpi4py", job, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(tmp_path / "out.npz")
    for seed in range(32):
        sizes, kw, batches = _random_case(seed)
        m = fastlstm.Model(*sizes, **kw)
        losses = [m.train_step(*b) for b in batches]
        assert np.max(np.abs(got[f"params{seed}"] - m.params)) <= 1e-10, (seed, kw)
        assert np.allclose(got[f"loss{seed}"], losses, rtol=1e-10, atol=0), (seed, kw)


@pytest.mark.parametrize("batch_first", [False, True])
def test_a_failed_step_fails_on_every_rank_and_the_next_one_trains(tmp_path, batch_first):
    """A NaN in rank 1's rows raised on rank 1 alone, at its shard's index (2, 2, 1); rank 0
    went on into the all-reduce, where rank 1's next step met it: rank 1 trained on a sum of
    two different batches' gradients and rank 0 waited forever. Now the whole batch is
    checked on every rank (the same error, at the batch's index), and a failure of one
    rank's part (here MemoryError) is shared before the gradients are: that rank raises it,
    the others RankFailed. A batch of fewer rows than ranks is refused on every rank alike.
    No rank updates, and the next steps equal one process's."""
    job = _script(tmp_path, f"""
        import numpy as np, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import fastlstm
        from fastlstm.distributed import DataParallel, RankFailed
        from test_distributed import _batches
        bf = {batch_first!r}
        m = fastlstm.Model(3, 5, 3, 2, dtype=np.float64, seed=1, loss="mse", output="last", batch_first=bf)
        dp = DataParallel(m, check_every=1)
        swap = (lambda a: np.ascontiguousarray(a.swapaxes(0, 1))) if bf else (lambda a: a)
        batches = [(swap(x), np.ones((8, 3)), L) for x, _, L in _batches("last", steps=3)]
        bad = batches[0][0].copy()
        bad[(6, 2, 1) if bf else (2, 6, 1)] = np.nan            # row 6: rank 1's shard
        said = []
        try:
            dp.train_step(bad, *batches[0][1:])
        except ValueError as e:
            said.append(f"{{type(e).__name__}}: {{e}}")
        one = np.ascontiguousarray(batches[0][0][:1] if bf else batches[0][0][:, :1])     # a row for 2 ranks
        try:
            dp.train_step(one, np.ones((1, 3)), batches[0][2][:1])
        except ValueError as e:
            said.append(f"{{type(e).__name__}}: {{e}}")
        real = m.compute_gradients
        if dp.rank == 1:
            def fail(*a, **k):
                m.compute_gradients = real
                raise MemoryError("no room for the workspace")
            m.compute_gradients = fail
        try:
            dp.train_step(*batches[0])
        except (MemoryError, RankFailed) as e:
            said.append(f"{{type(e).__name__}}: {{e}}")
        losses = [dp.train_step(*b) for b in batches]
        open(f"{tmp_path}/said{{dp.rank}}.txt", "w").write(" | ".join(said))      # not print: the ranks' lines interleave
        if dp.rank == 0:
            np.save({str(tmp_path / "params.npy")!r}, m.params)
            np.save({str(tmp_path / "losses.npy")!r}, losses)
    """)
    r = _mpi(2, sys.executable, "-m", "mpi4py", job, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    said = {f"rank {k}": (tmp_path / f"said{k}.txt").read_text() for k in (0, 1)}
    where = "(6, 2, 1)" if batch_first else "(2, 6, 1)"
    for rank in ("rank 0", "rank 1"):
        assert said[rank].startswith(f"NonFiniteValue: x must be finite; found nan at index {where}"), said
    assert said["rank 1"].endswith("MemoryError: no room for the workspace"), said
    assert all(" | ValueError: a batch of 1 row cannot be split over 2 ranks | " in s for s in said.values()), said
    assert said["rank 0"].endswith("RankFailed: rank 1's part of the step failed (MemoryError: no room for the "
                                   "workspace); no rank updated the model"), said
    single = fastlstm.Model(3, 5, 3, 2, dtype=np.float64, seed=1, loss="mse", output="last")
    losses = [single.train_step(x, np.ones((8, 3)), L) for x, _, L in _batches("last", steps=3)]
    assert np.max(np.abs(np.load(tmp_path / "params.npy") - single.params)) <= 1e-12
    assert np.allclose(np.load(tmp_path / "losses.npy"), losses, rtol=1e-12, atol=0)


def _one_rank_short_of_memory(tmp_path, model, x, first, short, why):
    """Three steps of `model` on 2 ranks: on batch `x` (T, 400, ·) under the memory limit
    `first` on both ranks (None: the machine's); on x with T doubled under the limit `short`
    on rank 1 alone; on x again under the machine's limit. Asserts that the first and last
    steps trained on both ranks, and that the second failed on rank 1 with MemoryError
    matching the regex `why` and on rank 0 with RankFailed naming it, and updated neither."""
    job = _script(tmp_path, f"""
        import numpy as np
        import fastlstm
        from fastlstm import _validate as v
        from fastlstm.distributed import DataParallel, RankFailed
        m = {model}
        dp = DataParallel(m, set_threads=False)
        x, y = {x}, np.zeros((400, 2), np.float32)
        real = v.cgroup_memory_limit
        v.cgroup_memory_limit = (lambda: {first}) if {first} else real
        said = [f"{{dp.train_step(x, y):.3f}}"]
        v.cgroup_memory_limit = (lambda: {short}) if dp.rank == 1 else real
        try:
            dp.train_step(np.concatenate([x, x]), y)
        except (MemoryError, RankFailed) as e:
            said.append(f"{{type(e).__name__}}: {{e}} steps={{m.steps}}")
        v.cgroup_memory_limit = real
        said.append(f"{{dp.train_step(x, y):.3f}} steps={{m.steps}}")
        open(f"{tmp_path}/said{{dp.rank}}.txt", "w").write(" | ".join(said))
    """)
    r = _mpi(2, sys.executable, "-m", "mpi4py", job)
    assert r.returncode == 0, r.stdout + r.stderr
    said = [(tmp_path / f"said{k}.txt").read_text().split(" | ") for k in (0, 1)]
    for loss, _, last in said:
        assert float(loss) > 0 and last.endswith(" steps=2"), said
    assert re.fullmatch(rf"MemoryError: {why}.* steps=1", said[1][1]), said
    assert re.fullmatch(rf"RankFailed: rank 1's part of the step failed \(MemoryError: {why}.*\); no rank updated "
                        r"the model steps=1", said[0][1]), said


def test_a_rank_short_of_memory_for_its_shard_fails_the_step_on_every_rank(tmp_path):
    """The workspace a rank needs is its shard's: under a memory limit that holds a shard's
    but not the whole batch's, a step trains. A limit on one rank alone (one machine of a
    job, say) that its shard's workspace exceeds fails the step there with MemoryError and
    on the other rank with RankFailed, no rank updates, and the next step trains on both.
    (A memory check before the ranks share their failures, as Model's calls make before
    they scan x, left the other rank waiting in the allgather for a step that never came.)"""
    _one_rank_short_of_memory(               # the workspace: about 18 MiB a shard, 36 the whole
        tmp_path, "fastlstm.Model(3, 64, 2, seed=0)",
        "np.random.default_rng(0).standard_normal((50, 400, 3)).astype(np.float32)", "24 << 20", "24 << 20",
        r"the workspace for T = 100, B = 200 would need 3\d\.\d MiB, more than the 24\.0 MiB ")


def test_a_rank_short_of_memory_for_the_batch_checks_copies_fails_the_step_on_every_rank(tmp_path):
    """The whole batch's checks keep copies (int32 token ids as int64, here): a memory limit
    on one rank alone that such a copy exceeds fails the step there with MemoryError and on
    the other rank with RankFailed, no rank updates, and the next step trains on both. (The
    checks ran before the ranks shared their failures: the other rank waited for ever.)"""
    _one_rank_short_of_memory(               # the copy of T = 100 ids as int64: 313 KiB
        tmp_path, "fastlstm.Model(2, 4, 2, vocab_size=7, seed=0)",
        "np.random.default_rng(0).integers(0, 7, (50, 400)).astype(np.int32)", "None", "200 << 10",
        r"the copy of token ids \(int64\) would need 0\.3 MiB, more than the 0\.2 MiB ")


def test_ranks_with_different_models_are_refused_on_every_rank(tmp_path):
    """Other sizes on one rank failed inside MPI's broadcast ("message sizes do not match"),
    and another loss or optimizer trained on silently, each rank its own way. A model made
    with seed=None draws its own dropout seed on each rank: rank 0's is sent to all. And a
    model in eval mode on one rank alone (dropout off there) is refused at the step, which
    updates no rank."""
    job = _script(tmp_path, """
        import numpy as np
        import fastlstm
        from fastlstm.distributed import DataParallel
        from mpi4py import MPI
        r = MPI.COMM_WORLD.Get_rank()
        try:
            DataParallel(fastlstm.Model(3, 5 + r, 3, loss=("mse", "xent")[r], seed=0,
                                        optimizer=(fastlstm.Adam(lr=1e-2), fastlstm.SGD(lr=1e-2))[r]))
        except ValueError as e:
            open(f"%s/said{r}.txt", "w").write(str(e))
        m = fastlstm.Model(3, 5, 3, 2, dropout=0.5)
        dp = DataParallel(m)
        seeds = dp.comm.allgather(m.core.dropout_seed)
        x, y = np.ones((4, 4, 3), np.float32), np.ones((4, 3), np.float32)
        if r == 0:
            m.eval()
        try:
            dp.train_step(x, y)
        except ValueError as e:
            open(f"%s/mode{r}.txt", "w").write(str(e))
        assert m.steps == 0
        m.train()
        dp.train_step(x, y)
        dp.check_identical()
        if r == 0:
            print("seeds", len(set(seeds)), "steps", m.steps, flush=True)
    """ % (tmp_path, tmp_path))
    r = _mpi(2, sys.executable, "-m", "mpi4py", job)
    assert r.returncode == 0, r.stdout + r.stderr
    for k in (0, 1):
        assert (tmp_path / f"said{k}.txt").read_text() == (
            "DataParallel needs the same model on every rank (the same arguments to Model and its optimizer); "
            "rank 1: hidden_size=6 (rank 0: 5), loss='xent' (rank 0: 'mse'), optimizer={'name': 'sgd', 't': None, "
            "'lr': 0.01, 'momentum': 0.0, 'weight_decay': 0.0} (rank 0: {'name': 'adam', 't': None, 'lr': 0.01, "
            "'beta1': 0.9, 'beta2': 0.999, 'eps': 1e-08, 'weight_decay': 0.0}), params=261 (rank 0: 198)")
    assert "seeds 1 steps 1" in r.stdout
    for k in (0, 1):
        assert (tmp_path / f"mode{k}.txt").read_text() == (
            "the model is in eval mode on rank 0 and in training mode on the others, so only some ranks dropped "
            "out; call model.train() (or model.eval()) on every rank. No rank updated the model")


def test_a_failing_rank_aborts_the_whole_job_quickly(tmp_path):
    job = _script(tmp_path, """
        from mpi4py import MPI
        import time
        if MPI.COMM_WORLD.Get_rank() == 1:
            raise RuntimeError("rank 1 fails")
        MPI.COMM_WORLD.Barrier()            # rank 0 would wait here forever without the abort
        time.sleep(60)
    """)
    r = _mpi(2, sys.executable, "-m", "mpi4py", job, timeout=60)
    assert r.returncode != 0 and "rank 1 fails" in r.stderr


def test_diverged_ranks_are_detected_on_every_rank(tmp_path):
    job = _script(tmp_path, """
        import numpy as np
        import fastlstm
        from fastlstm.distributed import DataParallel, RanksDiverged
        m = fastlstm.Model(2, 4, 1, seed=0)
        dp = DataParallel(m)
        dp.check_identical()
        if dp.rank == 1:
            m.params[0] += 1e-3
        try:
            dp.check_identical()
        except RanksDiverged as e:
            print(f"detected {dp.rank}", flush=True)
    """)
    r = _mpi(2, sys.executable, "-m", "mpi4py", job)
    assert r.returncode == 0, r.stderr
    assert "detected 0" in r.stdout and "detected 1" in r.stdout


def test_distributed_checkpoint_loads_and_continues_in_one_process(tmp_path):
    out = str(tmp_path / "d.ckpt")
    common = ["--T", "12", "--hidden", "8", "--batch", "8", "--eval-every", "10", "--quiet", "--full", "--out", out]
    r = _mpi(2, sys.executable, "-m", "mpi4py", "-m", "fastlstm", "train", "--distributed", "--steps", "20", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("fastlstm: task adding") == 1, "only rank 0 prints"
    assert fastlstm.load(out).steps == 20
    r = subprocess.run([sys.executable, "-m", "fastlstm", "train", "--resume", "--steps", "30", *common],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert fastlstm.load(out).steps == 30
    # rank 0 cannot write the log (a link into a folder gone): every rank stops before a step,
    # as when rank 0 cannot take the lock (rank 1 went on to its first step, and was aborted)
    log = tmp_path / "d.csv"
    log.unlink()
    log.symlink_to(tmp_path / "gone" / "d.csv")
    r = _mpi(2, sys.executable, "-m", "mpi4py", "-m", "fastlstm", "train", "--distributed", "--resume", "--steps",
             "40", *common)
    assert r.returncode == 2 and f"No such file or directory: '{log}'" in r.stderr, r.stderr
    assert f"rank 0 cannot take the lock of --out {out} or write its log" in r.stderr, r.stderr
    assert fastlstm.load(out).steps == 30


def test_ranks_that_read_different_data_are_refused_before_training(tmp_path):
    """`--data s.csv` from two folders (mpiexec's -wdir for each rank), as on two hosts with
    their own copies: one stale copy made the ranks draw batches from two data sets, and its
    own evaluations could stop one rank alone. Every rank now says what differs; the same
    copies train."""
    for d, rows in (("a", 300), ("b", 301), ("c", 300)):
        (tmp_path / d).mkdir()
        v = np.sin(np.arange(rows) / 5)
        (tmp_path / d / "s.csv").write_text("v\n" + "".join(f"{x:.4f}\n" for x in v))

    def run(a, b):
        cmd = [sys.executable, "-m", "mpi4py", "-m", "fastlstm", "train", "--distributed", "--data", "s.csv",
               "--target", "v", "--window", "10", "--steps", "4", "--quiet", "--out", str(tmp_path / "run.ckpt"),
               "--overwrite"]
        return _mpi(1, "-wdir", str(tmp_path / a), *cmd, ":", "-n", "1", "-wdir", str(tmp_path / b), *cmd)

    r = run("a", "b")
    assert r.returncode != 0 and r.stderr.count(
        "fastlstm: error: every rank must read the same data (the same file contents and settings) with the same "
        "seed; rank 1: fingerprint=[") == 2, r.stdout + r.stderr
    assert not (tmp_path / "run.ckpt").exists()
    r = run("a", "c")
    assert r.returncode == 0, r.stdout + r.stderr
    assert fastlstm.load(tmp_path / "run.ckpt").steps == 4


def test_ranks_share_the_cpus_they_may_run_on():
    """Threads per rank from the ranks' CPU affinities (taskset, a cgroup's cpuset,
    mpiexec -bind-to), not from the machine's CPU count: 2 ranks in a 4-CPU allocation of a
    64-core node took 32 threads each (Numba cut them to the 4 CPUs: 8 threads on 4 CPUs)."""
    from fastlstm.distributed import _share
    alloc = set(range(4))
    assert _share(alloc, [alloc, alloc]) == 2                                 # unbound, in an allocation
    halves = [set(range(0, 8)), set(range(8, 16))]
    assert [_share(s, halves) for s in halves] == [8, 8]                      # bound to a socket each
    assert [_share({c}, [{0}, {1}, {2}]) for c in range(3)] == [1, 1, 1]      # bound to a core each
    assert _share({0, 1}, [{0, 1}] * 3) == 1                                  # more ranks than CPUs: 1 each
    assert _share(set(range(6)), [set(range(6)), set(range(3))]) == 4         # 3 CPUs alone, 3 shared
    r = subprocess.run([MPIEXEC, "-n", "1", sys.executable, "-c",       # as `taskset -c 0 mpiexec ...`
                        "import numba, fastlstm; from fastlstm.distributed import DataParallel; "
                        "dp = DataParallel(fastlstm.Model(2, 4, 1, seed=0)); print(dp.threads, numba.get_num_threads())"],
                       capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    assert r.returncode == 0 and r.stdout.split() == ["1", "1"], r.stdout + r.stderr


def test_data_parallel_refuses_bad_arguments_before_any_rank_trains(tmp_path):
    """check_every="10" was taken and failed at the first check, after every rank had applied
    the step; a model of another kind failed inside the configuration check."""
    job = _script(tmp_path, """
        import fastlstm
        from fastlstm.distributed import DataParallel
        m = fastlstm.Model(2, 4, 1, seed=0)
        for kwargs in (dict(check_every="10"), dict(check_every=-1), dict(set_threads=1),
                       dict(model=fastlstm.LSTM(2, 4))):
            try:
                DataParallel(**{"model": m, **kwargs})
            except (TypeError, ValueError) as e:
                print(type(e).__name__, e)
        print("steps", m.steps)
    """)
    r = _mpi(1, sys.executable, job)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["TypeError check_every must be an integer, got str '10'",
                                     "ValueError check_every must be >= 0, got -1",
                                     "TypeError set_threads must be True or False, got 1",
                                     "TypeError DataParallel wraps a fastlstm.Model, got LSTM", "steps 0"], r.stdout


def test_c_driver_allreduces_gradients_between_ranks(tmp_path):
    mpicc = shutil.which("mpicc", path=os.path.dirname(sys.executable)) or shutil.which("mpicc")
    if mpicc is None or shutil.which("gcc") is None:
        pytest.skip("needs mpicc and gcc")
    from fastlstm import capi
    lib = tmp_path / "capi"
    capi.build(str(lib))
    exe = str(tmp_path / "mpi_train")
    r = subprocess.run([mpicc, "-O2", "-o", exe, os.path.join(ROOT, "capi", "examples", "mpi_train.c"),
                        *capi.flags(str(lib), True, True).split()], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = _mpi(2, exe, "200")
    assert r.returncode == 0, r.stderr
    sums = {line.split()[1]: line.split()[-1] for line in r.stdout.splitlines() if line.startswith("rank")}
    assert len(sums) == 2 and len(set(sums.values())) == 1, r.stdout
    losses = [float(line.split()[-1]) for line in r.stdout.splitlines() if line.startswith("step")]
    assert losses[-1] < losses[0], r.stdout


def test_ctrl_c_stops_every_rank_after_the_same_step_and_rank_0_saves(tmp_path):
    """mpiexec passes SIGINT to every rank; they agree on the step to stop after (one
    all-reduce per step), so none waits forever in the next all-reduce, and rank 0's
    checkpoint is complete before any rank exits."""
    import signal
    import time
    out = tmp_path / "d.ckpt"
    p = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "fastlstm", "train",
                          "--distributed", "--steps", "1000000", "--T", "12", "--hidden", "8", "--batch", "8",
                          "--eval-every", "1000000", "--quiet", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = "", time.time() + 120
        while "fastlstm: task" not in seen and p.poll() is None and time.time() < deadline:
            seen += p.stdout.readline()
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    step = int((seen + stdout).split("interrupted at step ")[1].split(";")[0])
    assert step > 0 and fastlstm.load(out).steps == step
