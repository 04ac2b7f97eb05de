"""Compile flags and thread-pool settings for every Numba kernel, in one place, and `njit`,
whose disk cache never fails a call.

Kernels are compiled lazily for float32 and float64 only; every array they take is
C-contiguous (copy_steps also takes a bidirectional layer's half of the outputs, a strided
view), and calls between kernels pass typed values, never literals (kernels' docstring), so
each kernel has two specialisations.

One thread pool runs a step: Numba's. The recurrent kernels are Numba's, and the big
products (`_blas.py`: δW, δX, the forward's input half, the head) are single-threaded calls
of a private OpenBLAS that Numba's threads make, block by block. A second pool would take
turns with it, and every turn costs a wake-up (about 100 µs on the virtual machines
measured) or, while the idle pool spins, a core (docs/performance.md has the figures). So,
before the pool starts:
- OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=2000 (GNU OpenMP, which then ignores the
  policy): Numba's threads spin some 10-30 µs after a kernel, across short Python gaps,
  then sleep. Longer spins bridged every gap of a step and made the small step 1.3x faster
  on an idle machine, but 2.6-5x slower while another process kept a core busy.
- OPENBLAS_THREAD_TIMEOUT=4: an OpenBLAS that does start threads (NumPy's, loaded after
  fastlstm) lets them sleep at once instead of spinning for 2^28 cycles. NumPy's, loaded
  by an earlier `import numpy`, may spin; it runs no product of a step. Without the private
  OpenBLAS, fastlstm's products fall back to NumPy's, limited to one thread by `blas_turn`
  when NumPy came first.
All are defaults: a value the user exported wins. The OpenMP ones bind on the runtime that
loads after them: `start_runtimes` makes that Numba's own, even after `import torch` loaded
PyTorch's GNU OpenMP (which read its settings before fastlstm could set them), and then
takes the three out of the environment again, for the runtimes and programs that follow.
"""
import contextlib
import functools
import os
import sys
import threading
import warnings

# Numba's messages carry ANSI colour codes otherwise (unreadable in logs and in the C ABI).
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
# Numba's threading layer: its OpenMP one, which the settings below tune, even where TBB
# loads too (Numba's 'threadsafe' and 'default' try TBB first; on it the streaming step took
# 1.5 times as long, and a C host crashed as it exited in two runs of six: docs/performance.md).
# Where OpenMP does not load, start_runtimes falls back to 'threadsafe' (TBB). Never
# 'workqueue': it aborts the process when two threads (say, two C threads with a model
# each) run parallel kernels at once.
_LAYER_CHOSEN_HERE = "NUMBA_THREADING_LAYER" not in os.environ
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")


def numba_cache_dir(package_dir, environ, writable=lambda d: os.access(d, os.W_OK)):
    """Where Numba should cache compiled kernels: None (beside the package, Numba's default)
    when the package folder is writable, else the first writable of $XDG_CACHE_HOME/fastlstm,
    $HOME/.cache/fastlstm, /tmp/fastlstm-cache-UID (a read-only install under `env -i` has
    no HOME, and Numba's own fallback then fails)."""
    if "NUMBA_CACHE_DIR" in environ or writable(package_dir):
        return None
    candidates = [os.path.join(environ[k], *sub) for k, sub in
                  (("XDG_CACHE_HOME", ("fastlstm",)), ("HOME", (".cache", "fastlstm"))) if environ.get(k)]
    candidates.append(os.path.join("/tmp", f"fastlstm-cache-{os.getuid()}"))
    for d in candidates:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError:
            continue
        if writable(d):
            return d
    return None


def cgroup_folders(controller, proc="/proc/self/cgroup", root="/sys/fs/cgroup"):
    """The folders of the process's cgroup for `controller` ('memory', 'cpu') and of its
    ancestors, deepest first, as (cgroup version, folder): v2's under root, v1's under
    root/controller. A container sees its own cgroup at the root."""
    try:
        with open(proc) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    folders = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":                                      # v2: 0::/path
            version, base = 2, root
        elif controller in controllers.split(","):                 # v1: N:cpu,cpuacct:/path
            version, base = 1, os.path.join(root, controller)
        else:
            continue
        parts = [p for p in path.split("/") if p]
        folders += [(version, os.path.join(base, *parts[:k])) for k in range(len(parts), -1, -1)]
    return folders


def cgroup_file(folder, name):
    """The words of a cgroup file; [] where it is missing or unreadable."""
    try:
        with open(os.path.join(folder, name)) as f:
            return f.read().split()
    except OSError:
        return []


def cgroup_cpus(**where):
    """The CPUs that the quota of the process's cgroup gives it (Docker's --cpus, a
    Kubernetes limit), rounded up: the lowest cpu.max (v2) or cpu.cfs_quota_us over
    cpu.cfs_period_us (v1) on its path; None without a quota."""
    cpus = []
    for version, d in cgroup_folders("cpu", **where):
        if version == 2:
            quota, period = (cgroup_file(d, "cpu.max") + ["max", "0"])[:2]
        else:
            quota = (cgroup_file(d, "cpu.cfs_quota_us") + ["-1"])[0]
            period = (cgroup_file(d, "cpu.cfs_period_us") + ["0"])[0]
        if quota.isdigit() and period.isdigit() and int(period) > 0:   # not "max" or -1
            cpus.append(max(1, -(-int(quota) // int(period))))
    return min(cpus, default=None)


@functools.cache
def cgroup_memory_limit(**where):
    """The bytes the process's cgroup lets it use: the lowest memory.max (cgroup v2) or
    memory.limit_in_bytes (v1) on its path; None where no limit is set or readable."""
    limits = []
    for version, d in cgroup_folders("memory", **where):
        words = cgroup_file(d, "memory.max" if version == 2 else "memory.limit_in_bytes")
        if words and words[0].isdigit():                            # not "max"
            limits.append(int(words[0]))
    return min(limits, default=None)


def address_space_left():
    """Bytes the process may still map under RLIMIT_AS (`ulimit -v`, which job schedulers
    set): the limit less its current size; None where it has none. Past it, an allocation
    fails (NumPy's MemoryError, "Unable to allocate"), saying nothing of the limit."""
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, ValueError, OSError, IndexError):
        return None
    return max(0, limit - size)


def default_threads(environ, cpus, usable, numba_loaded):
    """NUMBA_NUM_THREADS for a cgroup quota of `cpus` CPUs below the `usable` ones (the
    affinity, which Numba counts): a thread per CPU the quota pays for. Numba would start
    one per usable CPU, and the kernel would throttle them all once the quota ran out in
    each period. None where the user set it, where nothing asks for fewer, or where Numba
    has read its settings already: it would start its threads on the old count, then
    refuse the new one at its next compilation (RuntimeError)."""
    if numba_loaded or "NUMBA_NUM_THREADS" in environ or cpus is None or cpus >= usable:
        return None
    return str(cpus)


_usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_threads = default_threads(os.environ, cgroup_cpus(), _usable, "numba" in sys.modules)
if _threads:
    os.environ["NUMBA_NUM_THREADS"] = _threads

_cache = numba_cache_dir(os.path.dirname(os.path.abspath(__file__)), os.environ)
if _cache:
    os.environ["NUMBA_CACHE_DIR"] = _cache

BLAS_SPINS = "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
RUNTIME_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "2000"}
_set_here = [k for k in RUNTIME_DEFAULTS if k not in os.environ]     # start_runtimes takes them back
os.environ.update({k: RUNTIME_DEFAULTS[k] for k in _set_here})


def start_runtimes():
    """Start Numba's thread pool now, on its OpenMP layer (TBB only where that does not
    load), bound to the OpenMP runtime it was built against (RTLD_DEEPBIND), not to one
    already in the process; load the private OpenBLAS; then take the RUNTIME_DEFAULTS that
    fastlstm set out of the environment.

    Why the binding: `import torch` first puts PyTorch's own GNU OpenMP in the global symbol
    scope, and Numba's omppool, loaded later, would run its kernels on that runtime, which
    read its wait policy when it loaded: its threads spin for milliseconds after each kernel
    and steal the cores from the BLAS products that follow (docs/performance.md has the
    figures). Numba's own runtime loads here, after the OMP_WAIT_POLICY and GOMP_SPINCOUNT
    defaults above, whatever was imported first. Why the clean-up: each runtime reads them
    as it loads, and they were meant for fastlstm's two alone; left in place, they also
    bound a runtime loaded later (PyTorch's GNU OpenMP, imported after fastlstm) and every
    program the process starts (a C host's too). Called once, as fastlstm.kernels loads."""
    import numba
    from numba.np.ufunc import parallel
    # fastlstm's choice of layer, unless the user made one (in the environment, or in
    # numba.config): Numba read its config as it was imported, which may be before fastlstm
    ours = _LAYER_CHOSEN_HERE and numba.config.THREADING_LAYER in ("default", "omp")
    if ours:
        numba.config.THREADING_LAYER = "omp"
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        try:
            parallel._launch_threads()
        except ValueError:                  # no OpenMP runtime (Numba's omppool needs libgomp)
            if not ours:
                raise
            try:
                numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"] = "threadsafe"
                parallel._launch_threads()
            except ValueError:              # nor TBB, no dependency of fastlstm's: Numba's own pool
                numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
                parallel._launch_threads()
                warnings.warn("fastlstm: neither GNU OpenMP nor TBB loads in this process, so its kernels run on "
                              "Numba's workqueue threading layer, and calls from several threads take turns (that "
                              "layer ends the process when two run at once). Install GNU OpenMP (Debian and "
                              "Ubuntu: apt-get install libgomp1; a slim Docker image lacks it) for concurrent "
                              "calls", RuntimeWarning, stacklevel=2)
    finally:
        sys.setdlopenflags(flags)
    if numba.threading_layer() == "omp":
        os.register_at_fork(after_in_child=_forked)
    global SERIAL
    if numba.threading_layer() == "workqueue":      # fastlstm's fallback, or the user's choice
        SERIAL = threading.RLock()
    from . import _blas
    _blas.available()
    for k in _set_here:
        if os.environ.get(k) == RUNTIME_DEFAULTS[k]:       # unless the user has set it since
            del os.environ[k]
    _set_here.clear()


# On Numba's workqueue threading layer (start_runtimes), a lock that every public call
# takes: that layer aborts the process ("Concurrent access has been detected") when two
# threads run parallel kernels at once, as two models in two threads (or two C threads with
# a handle each) do. None on OpenMP and TBB, where different models run at once.
SERIAL = None

# True in a child that fork() made from a process whose OpenMP pool had started: GNU
# OpenMP's threads do not survive fork, and Numba kills such a child (SIGTERM) at its first
# parallel kernel. Every public call refuses first, with a way out (not_forked).
FORKED = False


def _forked():
    global FORKED
    FORKED = True


def not_forked():
    """RuntimeError in a forked child (FORKED), instead of Numba's SIGTERM."""
    raise RuntimeError("fastlstm cannot run in a process that fork() made from one where it had started its "
                       "threads (GNU OpenMP's threads do not survive fork): start worker processes with "
                       "multiprocessing.get_context('spawn') or 'forkserver', or import fastlstm in the child only")


# 'reassoc' lets LLVM vectorise the dot products' reductions and 'contract' fuse
# multiply-adds; both are fixed at compile time, so results never depend on the thread
# count. No 'nnan'/'ninf': the validation layer relies on NaN and Inf behaving as IEEE says.
FASTMATH = {"reassoc", "contract"}

JIT = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PARALLEL_JIT = dict(JIT, parallel=True)
# An @overload's implementation compiles into the kernels that call it, which the cache keeps;
# a cache of its own would be Numba's plain one, which raises where the disk is full
OVERLOAD_JIT = dict(JIT, cache=False)


def njit(**options):
    """numba.njit for fastlstm's kernels; with cache=True (JIT) its disk cache is a
    _kernel_cache(), on which a damaged or unwritable cache costs a compilation, never the
    call. Numba itself raises at every start on a cache file that a crash cut short or
    zeroed (EOFError, UnpicklingError: its issue 10434, open in 0.68.1), and from the
    first call on a full disk or quota (OSError: it forgives only Windows' EACCES)."""
    import numba
    if numba.config.DISABLE_JIT:      # the kernels' tiles are LLVM IR, which pure Python cannot run
        raise RuntimeError("fastlstm's kernels run compiled only, and NUMBA_DISABLE_JIT=1 is set in this process's "
                           "environment: unset it for the process that runs fastlstm")

    def decorate(py_func):
        kernel = numba.njit(**dict(options, cache=False))(py_func)
        if options.get("cache"):
            kernel._cache = _kernel_cache()(py_func)      # what Dispatcher.enable_caching sets
        return kernel
    return decorate


@functools.cache
def _kernel_cache():
    """Numba's FunctionCache, on which a file that cannot be read is a miss, written afresh
    once the kernel has compiled, and a cache that cannot be written is passed over; each
    says so once (a warning every start would show a cache that never works)."""
    from numba.core.caching import FunctionCache

    class KernelCache(FunctionCache):
        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception:                 # whatever a damaged pickle raises
                with contextlib.suppress(OSError, AttributeError):     # (Numba's private names)
                    os.unlink(self._cache_file._index_path)    # the save after compiling starts it afresh
                _cache_trouble(self._cache_path, "a file there could not be read, so its kernel compiles again")
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception as e:            # a full disk or quota, a folder gone read-only
                _cache_trouble(self._cache_path, f"they cannot be written there ({getattr(e, 'strerror', None) or e}), "
                                                 f"so those not written compile again in the next process "
                                                 f"(NUMBA_CACHE_DIR=another folder moves the cache)")
    return KernelCache


@functools.cache
def _cache_trouble(folder, said):
    message = f"fastlstm's compiled kernels in {folder}: {said}"
    warnings.warn(message, RuntimeWarning)


_blas = None


def blas_turn():
    """Context for a stretch of BLAS products: nothing when OpenBLAS's threads sleep when
    idle; otherwise BLAS limited to one thread, so that its spinning threads never compete
    with Numba's."""
    global _blas
    from . import _blas as private
    if not BLAS_SPINS or private.available():      # NumPy's BLAS runs no product of a step
        return contextlib.nullcontext()
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")
