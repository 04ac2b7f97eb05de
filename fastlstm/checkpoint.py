"""Checkpoint files: a NumPy .npz archive (no pickle) with a JSON header, written atomically.

Layout: a zip of .npy members. `__fastlstm__.npy` holds UTF-8 JSON {"format":
"fastlstm-checkpoint", "version": 1, ...} as uint8; every other member is one named 1-D
array. `np.load(path)` reads the file too.

Reading trusts nothing in the file. `read` opens only regular files. It parses the header
strictly (standard JSON, bounded size). It asks the caller which arrays that header implies,
with their shapes and dtypes. Then it checks every zip member against that list before
inflating anything: its name, compression (stored or deflate), flags, declared sizes, the
room it takes in the file, and its .npy header. Only then does it read the data into
arrays of the expected size. Any failure raises CheckpointError; a missing or unreadable
path stays an OSError. So a file can cost at most what its header's configuration implies
(a deflated member at most 1032 times its compressed size, deflate's limit), whatever it
claims.
"""
import contextlib
import errno
import json
import os
import re
import secrets
import stat
import zipfile

import numpy as np

FORMAT, VERSION = "fastlstm-checkpoint", 1
_HEADER = "__fastlstm__"
_MAX_HEADER_BYTES = 64 << 20         # the JSON header (config, optimizer, extra such as a history)
_MAX_MEMBERS = 64
_DEFLATE_RATIO = 1032                # deflate never inflates one byte to more than this
_NPY_HEADER_MAX = 10000              # numpy's own bound for a .npy header
ZIP = b"PK\x03\x04"                  # a zip archive's first bytes (.npz files, checkpoints)
_EMPTY_ZIP = b"PK\x05\x06"           # an empty zip archive's


class CheckpointError(ValueError):
    """A file that is not a readable fastlstm checkpoint of a supported version."""


def write(path, header, arrays):
    """Write header (a dict, standard JSON: no NaN/Inf) and arrays (name -> ndarray) to
    path, atomically (atomic_file)."""
    try:
        _string_keys(header)
        meta = json.dumps(dict(header, format=FORMAT, version=VERSION), allow_nan=False, default=_number).encode()
    except (TypeError, ValueError, RecursionError) as e:
        why = "it is nested too deeply" if isinstance(e, RecursionError) else e
        raise ValueError(f"a checkpoint's header (extra included) must be JSON with finite numbers: {why}") from None
    if len(meta) > _MAX_HEADER_BYTES:       # what read() refuses: a file that could not be loaded
        raise ValueError(f"a checkpoint's header (extra included) holds {len(meta)} bytes of JSON, more than the "
                         f"{_MAX_HEADER_BYTES} a checkpoint may: keep large data in a file of its own")
    # np.savez's layout (stored .npy members, zip64), with the archive closed whatever happens:
    # NumPy 1.x's savez left it open on an exception (a second Ctrl-C during a save), and its
    # __del__ then printed a traceback at exit, the file it wrote to long closed
    with atomic_file(path, "a checkpoint") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, a in {_HEADER: np.frombuffer(meta, np.uint8), **arrays}.items():
            with z.open(name + ".npy", "w", force_zip64=True) as m:
                np.lib.format.write_array(m, np.asanyarray(a), allow_pickle=False)


def _number(o):
    """json.dumps's fallback: a NumPy scalar (np.float32(0.5), np.int64(3), np.bool_(True),
    what a metric computed with NumPy is) as the Python number it holds; else TypeError,
    an array's saying how to give it."""
    if isinstance(o, np.generic) and o.dtype.kind in "biuf":
        return o.item()
    raise TypeError(f"{type(o).__name__} {o!r:.40} is not JSON" + (": give a list, a.tolist()" if isinstance(o, np.ndarray)
                                                                  else ""))


def _string_keys(o):
    """TypeError for a dict key that is not a string: JSON would write {1: 2} as {"1": 2}, and
    the checkpoint would load with another `extra` than the one saved."""
    if isinstance(o, dict):
        for k, x in o.items():
            if not isinstance(k, str):
                raise TypeError(f"keys must be strings, got {k!r} (JSON would bring it back as a string)")
            _string_keys(x)
    elif isinstance(o, (list, tuple)):
        for x in o:
            _string_keys(x)


# The temporaries being written now. A signal handler that ends the process at once (the
# command line's, outside a run's loop) removes them, as atomic_file's own clean-up would.
WRITING = set()


@contextlib.contextmanager
def atomic_file(path, what, text=False):
    """A new file object for path's whole contents (binary, or UTF-8 text with newline=""),
    written atomically: into a temporary in path's folder, created as any new file is
    (mode 0o666 less the umask), flushed to disk and renamed over path when the block ends,
    removed if it raises. So a failure (a full disk, a Ctrl-C) leaves path as it was,
    never half written, and an OSError names path and `what` it is, not the temporary.
    Temporaries left by writers that died (SIGKILL) are removed first. A symbolic link's
    target is written (the link stays); a path that is no regular file (/dev/stdout, a
    FIFO) is written in place, as open() would: a rename would replace the device."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"the path of {what} must be a str, bytes or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(path)
    if not path:                             # realpath('') is the working folder: a rename over it
        raise FileNotFoundError(errno.ENOENT, f"{what} needs a file name", path)
    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)      # through links, /dev/stdout's to a pipe too
    except OSError:
        kind = None                                    # none yet (or unreadable: the write says)
    if kind == stat.S_IFDIR:                 # before a temporary is made beside it, in its parent
        raise IsADirectoryError(errno.EISDIR, f"{what} needs a file name, not a folder", path)
    opened = dict(mode="w", newline="", encoding="utf-8") if text else dict(mode="wb")
    if kind not in (None, stat.S_IFREG):
        with _naming(path, what), open(path, **opened) as f:
            yield f
        return
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    prefix = _temp_prefix(target)
    _remove_stale(folder, prefix)
    tmp = os.path.join(folder, f"{prefix}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write {what} in {folder}: {e.strerror}", path) from None
    WRITING.add(tmp)
    try:
        with _naming(path, what, tmp), os.fdopen(fd, **opened) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        WRITING.discard(tmp)
    try:
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename itself is atomic


def append_file(path, data, what):
    """Append bytes `data` to path (created as any new file is), flushed to disk before it
    returns; a failure (a full disk) cuts the file back to what it was, and its OSError
    names path and `what` it is."""
    with _naming(path, what):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            size = os.fstat(fd).st_size
            view = memoryview(data)
            while view:                         # a disk that fills up takes part of it, then refuses
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        finally:
            os.close(fd)


@contextlib.contextmanager
def _naming(path, what, temporary=None):
    """An OSError without a file name (a full disk: "[Errno 28] No space left on device"),
    or naming the temporary (a rename that failed), raised again naming path and what it is."""
    try:
        yield
    except OSError as e:
        if e.errno is None or e.filename not in (None, temporary):
            raise
        raise type(e)(e.errno, f"cannot write {what}: {e.strerror}", path) from None


def _temp_prefix(path):
    return f".{os.path.basename(path)[:80]}.fastlstm-"


def _remove_stale(folder, prefix):
    """Unlink this path's temporaries whose writing process no longer runs on this host."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[^/]*\.tmp$")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def open_regular(path):
    """path opened for reading in binary, or None where it names something else than a regular
    file: a device (/dev/zero never ends), a FIFO (opened without blocking: with no writer it
    would hang the caller), a folder."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def read(path, arrays_for=None):
    """(header dict, {name: ndarray}) from a checkpoint, or CheckpointError saying why not.

    arrays_for(header) validates the header (raising ValueError or TypeError) and returns
    {name: (shape, dtype)}: exactly the arrays the file must hold (default: a Model's)."""
    if arrays_for is None:
        from .model import _checkpoint_arrays as arrays_for
    path = os.fsdecode(path)
    f = open_regular(path)                                            # OSError stays itself
    if f is None:
        raise CheckpointError(f"{path}: not a fastlstm checkpoint (not a regular file)")
    with f:
        magic = f.read(4)
        if magic == b"\x93NUM":
            raise CheckpointError(f"{path}: not a fastlstm checkpoint (a bare .npy array)")
        if magic not in (ZIP, _EMPTY_ZIP):
            raise CheckpointError(f"{path}: not a fastlstm checkpoint (not a zip archive)")
        f.seek(0)
        try:
            return _read_zip(f, os.fstat(f.fileno()).st_size, arrays_for)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        except MemoryError:
            raise
        except Exception as e:   # noqa: BLE001  (zipfile, json, numpy: every malformation)
            raise CheckpointError(f"{path}: not a readable fastlstm checkpoint "
                                  f"(truncated or corrupt: {type(e).__name__}: {e})") from e


def _read_zip(f, file_size, arrays_for):
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if len(infos) > _MAX_MEMBERS or len(set(names)) != len(names):
            raise CheckpointError("not a fastlstm checkpoint (too many or duplicate members)")
        members = dict(zip(names, infos))
        if _HEADER + ".npy" not in members:
            raise CheckpointError(f"not a fastlstm checkpoint (no {_HEADER} header)")
        info = members[_HEADER + ".npy"]
        _check_info(_HEADER, info, None, np.dtype(np.uint8), file_size, _MAX_HEADER_BYTES)
        raw = _member(z, _HEADER, info, None, np.dtype(np.uint8))
        header = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_refuse_constant)
        if not isinstance(header, dict):
            raise CheckpointError(f"not a fastlstm checkpoint (its header is a JSON {type(header).__name__})")
        if header.get("format") != FORMAT:
            raise CheckpointError(f"not a fastlstm checkpoint (format {header.get('format')!r})")
        if header.get("version") != VERSION:
            raise CheckpointError(f"checkpoint version {header.get('version')!r} is not supported "
                                  f"(this fastlstm reads version {VERSION})")
        try:
            want = arrays_for(header)
        except (KeyError, TypeError, ValueError, OverflowError, MemoryError) as e:
            raise CheckpointError(f"inconsistent fastlstm checkpoint: {type(e).__name__}: {e}") from None
        extra = set(names) - {_HEADER + ".npy"} - {k + ".npy" for k in want}
        missing = [k for k in want if k + ".npy" not in members]
        if extra or missing:
            raise CheckpointError(f"inconsistent fastlstm checkpoint: missing arrays {missing}, "
                                  f"unexpected members {sorted(extra)}")
        for k, (shape, dtype) in want.items():            # every member checked before any is read
            _check_info(k, members[k + ".npy"], shape, np.dtype(dtype), file_size, None)
        out = {k: _member(z, k, members[k + ".npy"], shape, np.dtype(dtype))
               for k, (shape, dtype) in want.items()}
    return header, out


def _refuse_constant(name):
    raise ValueError(f"the header holds {name}, which standard JSON does not allow")


def _check_info(name, info, shape, dtype, file_size, limit):
    """Refuse member `name` if its zip entry cannot hold exactly `shape` of `dtype` (or,
    with shape None, at most `limit` bytes), before anything is inflated."""
    if info.flag_bits & 0x1:
        raise CheckpointError(f"member {name} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"member {name} uses compression method {info.compress_type} "
                              "(a checkpoint is stored or deflated)")
    if info.header_offset + info.compress_size > file_size:
        raise CheckpointError(f"member {name} claims {info.compress_size} bytes past the end of the file")
    if (info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size) or \
            info.file_size > _DEFLATE_RATIO * info.compress_size + 1024:
        raise CheckpointError(f"member {name} declares {info.file_size} bytes from "
                              f"{info.compress_size} compressed")
    data = dtype.itemsize * int(np.prod(shape)) if shape is not None else None
    if data is not None and not data < info.file_size <= data + _NPY_HEADER_MAX + 128:
        raise CheckpointError(f"{name} has shape other than {shape} {dtype}, which the configuration "
                              f"needs ({info.file_size} bytes in the file for {data} of data)")
    if limit is not None and info.file_size > limit + _NPY_HEADER_MAX + 128:
        raise CheckpointError(f"member {name} holds {info.file_size} bytes, more than {limit}")


def _member(z, name, info, shape, dtype):
    """Read member `name` (.npy), already passed by _check_info, as an array of `shape`
    (None: any 1-D length) and `dtype`."""
    with z.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"member {name} has .npy version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        got_shape, fortran, got_dtype = read_header(m, max_header_size=_NPY_HEADER_MAX)
        if fortran or got_dtype != dtype or len(got_shape) != 1 or (shape is not None and got_shape != shape):
            raise CheckpointError(f"{name} has shape {got_shape} {got_dtype}"
                                  f"{' (Fortran order)' if fortran else ''}; the configuration needs "
                                  f"{shape if shape is not None else '(n,)'} {dtype}")
        a = np.empty(got_shape, dtype)
        want = a.nbytes
        if shape is None and want > info.file_size:
            raise CheckpointError(f"member {name} declares {got_shape} but holds {info.file_size} bytes")
        view = memoryview(a).cast("B")
        got = 0
        while got < want:
            n = m.readinto(view[got:])
            if not n:
                raise CheckpointError(f"member {name} ends after {got} of {want} bytes")
            got += n
        if m.read(1):                                      # also makes zipfile check the CRC-32
            raise CheckpointError(f"member {name} holds more than {got_shape} {dtype}")
    return a
