"""Checkpoint files: a NumPy .npz archive (no pickle) with a JSON header, written atomically.

Layout: member `__fastlstm__` holds UTF-8 JSON {"format": "fastlstm-checkpoint",
"version": 1, ...}; every other member is a named array. Loading never unpickles
(allow_pickle=False); zip's CRC-32 catches corrupted bytes; a truncated file has no zip
directory. All of these, and a wrong format or version, raise CheckpointError.
"""
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

FORMAT, VERSION = "fastlstm-checkpoint", 1
_HEADER = "__fastlstm__"


class CheckpointError(ValueError):
    """A file that is not a readable fastlstm checkpoint of a supported version."""


def write(path, header, arrays):
    """Write header (JSON-able dict) and arrays (name -> ndarray) to path, atomically:
    a temporary file in the same folder, flushed to disk, then renamed over path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    meta = dict(header, format=FORMAT, version=VERSION)
    fd, tmp = tempfile.mkstemp(prefix=".fastlstm-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_HEADER: np.frombuffer(json.dumps(meta).encode(), np.uint8)}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename itself is atomic


def read(path):
    """(header dict, {name: ndarray}) from a checkpoint, or CheckpointError saying why not."""
    path = os.fspath(path)
    with open(path, "rb") as f:                        # FileNotFoundError stays itself
        magic = f.read(6)
    if magic[:2] != b"PK" and magic != b"\x93NUMPY":
        raise CheckpointError(f"{path}: not a fastlstm checkpoint (not a zip archive)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not a fastlstm checkpoint (a bare .npy array)")
        with z:
            if _HEADER not in z.files:
                raise CheckpointError(f"{path}: not a fastlstm checkpoint (no {_HEADER} header)")
            header = json.loads(bytes(z[_HEADER]).decode())
            if header.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a fastlstm checkpoint (format {header.get('format')!r})")
            if header.get("version") != VERSION:
                raise CheckpointError(f"{path}: checkpoint version {header.get('version')!r} is not "
                                      f"supported (this fastlstm reads version {VERSION})")
            arrays = {k: z[k] for k in z.files if k != _HEADER}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError,
            UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable fastlstm checkpoint "
                              f"(truncated or corrupt: {type(e).__name__}: {e})") from e
    return header, arrays
