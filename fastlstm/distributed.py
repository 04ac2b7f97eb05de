"""Synchronous data-parallel training over MPI (the optional extra `fastlstm[mpi]`).

    mpiexec -n 4 python -m mpi4py -m fastlstm train --distributed ...

Every rank holds the same model and draws the same global batch (same seed); each computes
gradients on its own contiguous shard of the batch rows, weighted by its share of the
predictions; one in-place Allreduce sums the flat gradient array; every rank then clips and
applies the same update, so parameters stay identical. A periodic checksum comparison fails
loudly if they ever differ. Rank 0 alone writes checkpoints and prints.
"""
import os
import zlib

import numpy as np

from ._validate import boolean, counted, optional, positive_int


class RanksDiverged(RuntimeError):
    """The ranks' parameters are no longer identical."""


class RankFailed(RuntimeError):
    """Another rank's part of a step failed (it raised its own error); no rank updated."""


def _shard_bounds(B, size, rank):
    return rank * B // size, (rank + 1) * B // size


class DataParallel:
    """Wraps a Model for data-parallel training over an MPI communicator.

    model: the same configuration and seed on every rank (rank 0's parameters and optimizer
    state are broadcast at the start). check_every: steps between parameter-checksum
    comparisons (0: never). Threads: each rank uses its share of the CPUs it may run on
    (_share_cores) for Numba and BLAS, so that ranks sharing a machine do not oversubscribe it.
    """

    def __init__(self, model, comm=None, check_every=100, set_threads=True):
        from .model import Model
        if not isinstance(model, Model):
            raise TypeError(f"DataParallel wraps a fastlstm.Model, got {type(model).__name__}")
        # checked here: a check_every of "10" failed at the first check, after every rank had updated
        check_every = positive_int("check_every", check_every, minimum=0)
        set_threads = boolean("set_threads", set_threads)
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.model, self.check_every = model, check_every
        self.threads = _share_cores(self.comm) if set_threads else None   # None: as the process has it
        self._same_model_everywhere()
        self.comm.Bcast(model.params, root=0)
        for state in model.optimizer.state.values():
            self.comm.Bcast(state, root=0)
        model.optimizer.t = self.comm.bcast(model.optimizer.t, root=0)
        model.steps = self.comm.bcast(model.steps, root=0)
        model.core.dropout_seed = self.comm.bcast(model.core.dropout_seed, root=0)   # a seed=None model's too

    def _same_model_everywhere(self):
        """ValueError on every rank unless every rank's model has rank 0's configuration and
        optimizer (a model of other sizes made the broadcast fail inside MPI, and one with
        another loss or optimizer trained on silently, each rank its own way)."""
        m = self.model
        self.agree("DataParallel needs the same model on every rank (the same arguments to Model and its optimizer)",
                   dict(m.config(), optimizer=dict(m.optimizer.config(), t=None), params=m.params.size,
                        dropout_seed=None))                  # rank 0's seed and step count are sent to all

    def agree(self, what, mine):
        """ValueError(what; rank r: key=value (rank 0: value), ...) on every rank unless every
        rank's dict `mine` equals rank 0's."""
        theirs = self.comm.allgather(mine)
        differ = [f"rank {r}: " + ", ".join(f"{k}={c.get(k)!r} (rank 0: {theirs[0].get(k)!r})"
                                            for k in [*c, *(k for k in theirs[0] if k not in c)]
                                            if c.get(k) != theirs[0].get(k))
                  for r, c in enumerate(theirs) if c != theirs[0]]
        if differ:
            raise ValueError(f"{what}; " + "; ".join(differ))

    def rows(self, B):
        """This rank's rows (a slice) of a global batch of B rows."""
        if B < self.size:
            raise ValueError(f"a batch of {counted(B, 'row')} cannot be split over {self.size} ranks")
        return slice(*_shard_bounds(B, self.size, self.rank))

    def shard(self, x, y, lengths=None):
        """This rank's rows of a global batch, x (T, B, ·) or a batch_first model's (B, T, ·):
        (x, y, lengths, weight), weight = its share of the batch's predictions (each rank's
        loss is a mean over its own predictions)."""
        b = int(not self.model._batch_major)      # the batch axis: 0 for a batch_first model's x
        B = x.shape[b]
        rows = self.rows(B)
        L = None if lengths is None else np.asarray(lengths)
        if self.model.output == "last" or L is None:
            weight = (rows.stop - rows.start) / B
        else:
            weight = float(L[rows].sum()) / float(L.sum())
        ys = y[rows] if self.model.output == "last" else y[(slice(None),) * b + (rows,)]
        return (np.ascontiguousarray(x[(slice(None),) * b + (rows,)]), np.ascontiguousarray(ys),
                None if L is None else np.ascontiguousarray(L[rows]), weight)

    def train_step(self, x, y, lengths=None):
        """One synchronous step on a global batch (the same on every rank). Returns the
        global batch's mean loss (the same on every rank: the weighted shard losses summed).

        A step fails on every rank or on none, and then no rank updates: the whole batch is
        checked first, so a bad row raises the same error on every rank, with its index in
        the batch (not in a shard); a failure in one rank's part alone (out of memory, a
        Ctrl-C that reached it) is shared before the gradients are: that rank raises its
        error, the others RankFailed. Either way every rank stays in step for the next call."""
        m = self.model
        # Everything before the allgather fails inside this try, so that a failure one rank
        # alone meets (its memory limit, in the copies the checks keep; a Ctrl-C) is shared
        # rather than leaving the others waiting; a bad batch fails alike on every rank, and
        # each raises its own error. A batch_first x: its shape, not a copy. rows=0: the
        # workspace is the shard's, checked by compute_gradients.
        try:
            xt, L = m._check_x(x, lengths, lambda a: a.swapaxes(0, 1), rows=0)
            m._check_y(y, *xt.shape[:2], L)
            xs, ys, Ls, weight = self.shard(x, y, lengths)
            loss, failed = m.compute_gradients(xs, ys, Ls, first_row=self.rows(xt.shape[1]).start) * weight, None
        except BaseException as e:              # shared with the other ranks, then raised again below
            loss, failed = 0.0, e
        parts = self.comm.allgather((loss, None if failed is None else f"{type(failed).__name__}: {failed}",
                                     m._drops_out))
        if failed is not None:
            raise failed
        why = [(r, w) for r, (_, w, _) in enumerate(parts) if w]
        if why:
            raise RankFailed(f"rank {why[0][0]}'s part of the step failed ({why[0][1]}); no rank updated the model")
        if len({p[2] for p in parts}) > 1:      # model.eval() on one rank alone: its part without dropout
            evals = [r for r, p in enumerate(parts) if not p[2]]
            raise ValueError(f"the model is in eval mode on rank{'s' * (len(evals) > 1)} "
                             f"{', '.join(map(str, evals))} and in training mode on the others, so only some "
                             f"ranks dropped out; call model.train() (or model.eval()) on every rank. No rank "
                             f"updated the model")
        loss = sum(p[0] for p in parts)        # in rank order: the same bits on every rank
        m.grads *= m.dtype.type(weight)
        self.comm.Allreduce(self.MPI.IN_PLACE, m.grads, op=self.MPI.SUM)
        m.apply_gradients(loss)      # the same loss and gradients on every rank: all apply, or all refuse
        if self.check_every and m.steps % self.check_every == 0:
            self.check_identical()
        return loss

    def any(self, flag):
        """True on every rank if `flag` is true on any (say, a Ctrl-C that reached one rank)."""
        return bool(self.comm.allreduce(int(bool(flag)), op=self.MPI.MAX))

    def check_identical(self):
        """Raise RanksDiverged (on every rank) unless all ranks hold bitwise the same parameters."""
        sums = self.comm.allgather(zlib.crc32(self.model.params))   # its buffer: no copy to fail on one rank
        if len(set(sums)) != 1:
            raise RanksDiverged(f"parameters differ between ranks at step {self.model.steps}: "
                                f"checksums {sums}")


def _mpi():
    """mpi4py's MPI, or RuntimeError naming the extra (a traceback of ModuleNotFoundError before)."""
    return optional("mpi4py.MPI", "--distributed (DataParallel)", "mpi", "mpi4py",
                    then=", then launch the ranks with mpiexec -n N python -m mpi4py -m fastlstm train --distributed ...")


def _share_cores(comm):
    """Give this rank its share of the CPUs it may run on (its affinity: taskset, a cgroup's
    cpuset, mpiexec -bind-to), each CPU shared evenly among the ranks of this node that may
    run on it: cores // ranks when none is bound, its own cores when each is bound to its
    own. (cores // ranks alone gave 2 ranks in a 4-CPU Slurm allocation of a 64-core node 32
    threads each, which Numba cut to the 4 CPUs each could see: 8 threads on 4 CPUs.)"""
    import numba
    MPI = _mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    n = _share(mine, local.allgather(mine))
    local.Free()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    from threadpoolctl import threadpool_limits
    threadpool_limits(n, user_api="blas")       # NumPy's (fastlstm's own goes back to 1 at its next product)
    return n


def _share(mine, sets):
    """Threads for a rank that may run on the CPUs `mine`, the node's ranks on `sets`
    (its own among them): each CPU counts 1 / (the ranks that may run on it); at least 1."""
    return max(1, int(sum(1 / sum(cpu in s for s in sets) for cpu in mine) + 1e-9))
