"""Your own data: a text file, a CSV time series, or arrays, as datasets for `fastlstm train
--data` and `Model.fit`.

A dataset shares one small protocol with the built-in tasks of `fastlstm.tasks`:
- the model's shape: `input_size`, `output_size`, `loss`, `output`;
- training batches drawn with a numpy Generator: here `size` examples and `take(index, dtype)`
  → (x (T, B, D), y, lengths), which `training.Batches` visits in seeded epochs (the built-in
  tasks generate theirs with `batch(rng, B, dtype)`);
- a fixed validation set behind `metrics(model)` → {name: value}, and `monitor` = (name,
  "min" or "max"), the metric that early stopping and the best checkpoint follow;
- `spec()`: what a checkpoint must carry to rebuild the dataset (`from_spec`) with the same
  vocabulary or standardisation, and the data file's fingerprint.

Bad data raise `DataError` (a ValueError) naming the file and, where they exist, the line and
column, before any model or checkpoint is touched.
"""
import csv
import datetime as _dt
import difflib
import functools
import io
import math
import numbers
import os
import re
import sys
import zlib
from itertools import repeat

import numpy as np

from . import _validate as v
from . import choices
from .checkpoint import ZIP

MISSING = {"", "na", "n/a", "nan", "null", "none"}
MAX_CLASSES = 1 << 20        # class labels of an arrays file: far more classes than any sequence classifier has
CHUNK = 1 << 22                  # bytes of a text file decoded at a time
INDEX_BLOCK = 1 << 18            # characters used as indices at a time: NumPy widens an index array to intp (8 bytes each)
CSV_BLOCK = 1 << 16              # lines of a plain CSV split into cells at a time
VAL_CHARS = 100_000              # held-out characters scored at each evaluation (predict scores all)
MAX_VOCAB = 1 << 16


class DataError(ValueError):
    """Data that cannot be used, with the file and, where it has them, the line and column."""


def _missing(cell):
    """Whether a CSV cell is a missing value (empty, NA, NaN, ...; any case, any spaces)."""
    return cell.strip().lower() in MISSING


def _time_major(method):
    """For a data set's or built-in task's method that hands `model` time-major batches
    (metrics, forecasts, predictions): the model takes them so, whatever its batch_first
    (Model.time_major)."""
    @functools.wraps(method)
    def run(self, model, *args, **kwargs):
        with model.time_major():
            return method(self, model, *args, **kwargs)
    return run


def _fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def _separators(sep, decimal):
    """(sep, decimal) checked: sep one character that no number or quoted cell holds ("tab"
    for a tab), decimal "." or "," and not sep."""
    sep = choices.SEPARATORS.get(sep, sep)
    if not isinstance(sep, str) or len(sep) != 1 or sep.isalnum() or sep in '"\r\n.+-_':
        raise DataError(f"--sep must be one character that no number holds, such as ',', ';', '|' or 'tab', "
                        f"got {sep!r}")
    if decimal not in choices.DECIMALS:
        raise DataError(f"--decimal must be '.' or ',', got {decimal!r}")
    if decimal == sep:
        raise DataError(f"--decimal {decimal!r} is the separator too: with decimal commas the cells are "
                        f"separated by another character, such as --sep ';'")
    return sep, decimal


def _check_settings(*checks):
    """DataError naming the first setting out of its range; checks are (ok, "--name", "rule", value)."""
    for ok, name, rule, value in checks:
        if not ok:
            raise DataError(f"{name} must be {rule}, got {value!r}")


def fingerprint(path):
    """(size, CRC-32) of a file, read in chunks: resume checks that the data did not change."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc, size = zlib.crc32(block, crc), size + len(block)
    return [size, crc]


# Formats people reach for that fastlstm does not read: what each is, and what to save it as
_SHEET = ("a spreadsheet workbook", "save the sheet as CSV (Save As, CSV UTF-8)")
_TABLE = ("a pandas or Arrow table", "write it as CSV (df.to_csv(path, index=False))")
_ARRAYS = "save the arrays as an .npz of x and y (np.savez(path, x=x, y=y))"
FOREIGN = {".xlsx": _SHEET, ".xls": _SHEET, ".ods": _SHEET, ".parquet": _TABLE, ".feather": _TABLE,
           ".h5": ("an HDF5 file", _ARRAYS), ".hdf5": ("an HDF5 file", _ARRAYS),
           ".pkl": ("a pickle", _ARRAYS), ".pickle": ("a pickle", _ARRAYS)}


def kind_of(path):
    """The kind a file's name suggests: arrays (.npz, and .npy, which the arrays reader
    explains), series (.csv, .tsv), else text; DataError for a format in FOREIGN."""
    ext = os.path.splitext(path)[1].lower()
    if ext in FOREIGN:
        what, todo = FOREIGN[ext]
        raise DataError(f"{path}: {what}, which fastlstm does not read: {todo} (or give --kind to read it as "
                        f"text, a series or arrays anyway)")
    return {".npz": "arrays", ".npy": "arrays", ".csv": "series", ".tsv": "series"}.get(ext, "text")


def _a_file(path):
    """path, if it names a regular file; else DataError saying what it names instead."""
    if not os.path.isfile(path):
        saved = "; fastlstm reads data from a file (more than once, and --resume checks it): save it to one"
        raise DataError(f"{path}: " + ("a folder, not a file" if os.path.isdir(path) else
                                       "not a regular file (a pipe or a device)" + saved if os.path.exists(path) else
                                       "standard input is not read" + saved if path == "-" else "no such file"))
    return path


def open_data(path, kind=None, **settings):
    """The dataset of `path` (kind picked from its name unless given)."""
    path = _a_file(os.fsdecode(path))
    kind = kind or kind_of(path)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return KINDS[kind](path, **settings)


def from_spec(spec, path=None, check=True):
    """Rebuild the dataset a checkpoint recorded (`spec()`) from `path` or the recorded file,
    with the recorded vocabulary or standardisation. check=True (resume) insists on the file
    trained on (same size and CRC-32); check=False (predict) reads any file of that form."""
    spec = check_spec(spec)                  # each field, before a file is opened (a checkpoint's: any values)
    path = _a_file(os.fsdecode(path or spec["path"]))
    return KINDS[spec["kind"]](path, **spec["settings"], _spec=dict(spec, check=check))


def _batches(n, size):
    for b0 in range(0, n, size):
        yield b0, min(n, b0 + size)


# -- text ----------------------------------------------------------------------------------

def _where(path, offset):
    """(line, column) of byte `offset` of a UTF-8 file, both counted from 1 (columns in
    characters); read again only to report an error."""
    with open(path, "rb") as f:
        head = f.read(offset)
    line_start = head.rfind(b"\n") + 1
    line = head[line_start:] if line_start else head.removeprefix(BOM)   # the mark is no column
    return head.count(b"\n") + 1, len(line.decode("utf-8", "replace")) + 1


def _pieces(path):
    """(byte offset, uint8 array) pieces of about CHUNK bytes of a file, never splitting a
    UTF-8 sequence (a cut moves back over continuation bytes and their lead byte)."""
    with open(path, "rb") as f:
        start, tail = 0, b""
        while True:
            block = tail + f.read(CHUNK)
            if not block:
                return
            cut = len(block)
            if len(block) > len(tail):              # not yet the end of the file
                for _ in range(3):                  # a sequence is at most 4 bytes
                    if cut > 1 and block[cut - 1] & 0xC0 == 0x80:
                        cut -= 1
                if block[cut - 1] >= 0xC0:          # the lead byte of a cut sequence goes on too
                    cut -= 1
                cut = cut or len(block)
            yield start, np.frombuffer(block[:cut], np.uint8)
            start, tail = start + cut, block[cut:]


BOM = b"\xef\xbb\xbf"                                # UTF-8's byte-order mark


def _refuse_utf16(path, head, hint=""):
    """DataError when the file's first bytes are a UTF-16 byte-order mark (Windows' and
    spreadsheets' "Unicode text"): said plainly, rather than as its NUL bytes."""
    if bytes(head[:2]) in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
                        f"fastlstm reads UTF-8: save it as UTF-8{hint}")


def _not_utf8(path, at, e, hint=""):
    """DataError for the UnicodeDecodeError e at byte `at` of the file: where, and what to do
    (a file saved as Latin-1 or Windows' cp1252 is the usual case)."""
    line, col = _where(path, at)
    return DataError(f"{path}: invalid UTF-8 at line {line}, column {col} (byte {at}: {e.reason}); fastlstm "
                     f"reads UTF-8: save the file as UTF-8{hint} (one from Windows or a spreadsheet may be in "
                     f"cp1252 or Latin-1)")


def _characters(path, start, piece, new=True):
    """The characters of one piece: the bytes themselves (uint8) when all are ASCII, the
    fast and common case, else uint32 code points; DataError for a NUL byte or invalid UTF-8.
    new: a new run's file, whose kind --kind may change (predict's is the checkpoint's)."""
    if start == 0:
        _refuse_utf16(path, piece)
        if bytes(piece[:3]) == BOM:                 # Notepad's UTF-8 byte-order mark: not a character
            piece, start = piece[3:], 3
    nul = np.flatnonzero(piece == 0) if piece.size else ()
    if len(nul):
        line, col = _where(path, start + int(nul[0]))
        raise DataError(f"{path}: not a text file (a NUL byte at line {line}, column {col}); " +
                        ("pass --kind arrays for a .npz, or --kind series for a CSV" if new else
                         "the checkpoint is a model of text, which reads UTF-8 text files"))
    if not piece.size or piece.max() < 128:
        return piece
    try:
        s = piece.tobytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, start + e.start, e) from None
    return np.frombuffer(s.encode("utf-32-le"), "<u4")


UNICODE = 0x110000


def _distinct(chars):
    """The distinct code points of _characters' output, sorted (uint32)."""
    seen = np.zeros(128 if chars.dtype == np.uint8 else UNICODE, bool)
    for b0, b1 in _batches(len(chars), INDEX_BLOCK):
        seen[chars[b0:b1]] = True
    return np.flatnonzero(seen).astype(np.uint32)


def char_windows(ids, starts, T, V, dtype, tokens, buf=None):
    """(x, y, buf) for the windows of T + 1 characters of `ids` at offsets `starts` (B,):
    x the first T as token ids (T, B) int64 when `tokens` (a model with an embedding), else
    one-hot (T, B, V) in `dtype`, in `buf` when it has that shape; y (T, B) the next characters."""
    chars = ids[starts[None, :] + np.arange(T + 1)[:, None]].astype(np.int64)
    if tokens:
        return chars[:-1], chars[1:], buf
    shape = (T, len(starts), V)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = np.zeros(shape, dtype)
    else:
        buf.fill(0)
    np.put_along_axis(buf, chars[:-1, :, None], 1, axis=2)
    return buf, chars[1:], buf


class Text:
    """Next-character modelling on a UTF-8 file: x (T, B) token ids (`tokens`, for a model
    with an embedding) or (T, B, V) one-hot, y (T, B) the next character, cross-entropy at every step; figure of merit bits per character on the held-out
    last `val_fraction` of the characters.

    The vocabulary is the training part's characters, sorted, after index 0, which stands for
    any character the training part lacks. The file is read and decoded in 4 MB
    pieces twice (count and vocabulary, then ids), never held as a Python string; the ids take
    one byte a character while the vocabulary has fewer than 256 entries."""
    kind, loss, output, monitor = "text", "xent", "every", ("val_bpc", "min")

    def __init__(self, path, *, T=100, val_fraction=0.1, _spec=None):
        self.path, self.T, self.val_fraction = path, v.integer("--T", T), _fraction("--val-fraction", val_fraction)
        _check_settings((self.T >= 1, "--T", ">= 1", T), (0 < self.val_fraction < 1, "--val-fraction", "in (0, 1)",
                                                           val_fraction))
        self.fingerprint = _check_fingerprint(path, _spec)
        if os.path.getsize(path) == 0:
            raise DataError(f"{path}: the file is empty")
        pieces = []                                  # (byte start, byte stop, characters, distinct code points)
        for start, piece in _pieces(path):
            chars = _characters(path, start, piece, _spec is None)
            pieces.append((start, start + piece.size, chars.size, _distinct(chars)))
        n = sum(p[2] for p in pieces)
        n_val = int(round(n * self.val_fraction))
        self.n_train = n - n_val
        if _training(_spec) and (self.n_train < self.T + 1 or n_val < self.T + 1):
            count = f"{n} character{'' if n == 1 else 's'}"
            raise DataError(f"{path}: too short: of its {count}, {self.n_train} would go to training and {n_val} "
                            f"be held out; each part needs at least T + 1 = {self.T + 1} (lower --T or change "
                            f"--val-fraction)")
        if _spec is not None:
            vocab = np.array([ord(c) for c in _spec["vocab"][1:]], np.uint32)
        else:
            vocab, seen = [], 0
            for start, stop, count, uniq in pieces:
                if seen + count <= self.n_train:
                    vocab.append(uniq)
                elif seen < self.n_train:            # the piece the split falls in: its training part
                    with open(path, "rb") as f:
                        f.seek(start)
                        piece = np.frombuffer(f.read(stop - start), np.uint8)
                    vocab.append(_distinct(_characters(path, start, piece)[:self.n_train - seen]))
                seen += count
            vocab = np.unique(np.concatenate(vocab))
        if vocab.size + 1 > MAX_VOCAB:
            raise DataError(f"{path}: {vocab.size} distinct characters; a character model takes at most "
                            f"{MAX_VOCAB - 1}")
        self.vocab = [""] + [chr(c) for c in vocab]          # "" is the unknown character
        self._table = np.zeros(UNICODE, np.uint16)               # code point -> id (0: unknown)
        self._table[vocab] = np.arange(1, vocab.size + 1)
        self.input_size = self.output_size = len(self.vocab)
        dtype = np.uint8 if len(self.vocab) <= 256 else np.uint16
        self.ids = np.empty(n, dtype)
        at = 0
        counts = np.zeros(len(self.vocab), np.int64)
        for (start, piece), (_, _, count, _) in zip(_pieces(path), pieces):
            ids, chars = self.ids[at:at + count], _characters(path, start, piece)
            for b0, b1 in _batches(count, INDEX_BLOCK):
                np.take(self._table, chars[b0:b1], out=ids[b0:b1], mode="clip")
            for b0, b1 in _batches(max(0, min(count, self.n_train - at)), INDEX_BLOCK):
                counts += np.bincount(ids[b0:b1], minlength=len(self.vocab))
            at += count
        counts = counts[1:]
        p = counts[counts > 0] / self.n_train
        self.unigram_bpc = float(-(p * np.log2(p)).sum()) + 0.0   # + 0.0: one character scores 0, not -0
        self.size = max(0, (self.n_train - 1) // self.T)     # non-overlapping training windows
        n_windows = max(0, min((n_val - 1) // self.T, max(1, VAL_CHARS // self.T)))
        self.val_starts = self.n_train + np.arange(n_windows) * self.T
        self.vocab_size = len(self.vocab)
        self.tokens, self._x = False, None          # tokens: batches of ids for a model with an embedding

    def windows(self, starts, dtype=np.float32):
        """x, y of the windows at character offsets `starts` (char_windows)."""
        x, y, self._x = char_windows(self.ids, starts, self.T, len(self.vocab), dtype, self.tokens, self._x)
        return x, y, None

    def take(self, index, dtype=np.float32):
        return self.windows(np.asarray(index) * self.T, dtype)

    @_time_major
    def _nats(self, model, starts, T):
        """The model's summed cross-entropy (nats) over the windows of T at `starts`."""
        total = 0.0
        for b0, b1 in _batches(len(starts), 64):
            if T == self.T:
                x, y, _ = self.windows(starts[b0:b1], model.dtype)
            else:
                x, y, _ = char_windows(self.ids, starts[b0:b1], T, len(self.vocab), model.dtype, self.tokens)
            total += model.evaluate(x, y)["loss"] * y.size
        return total

    def metrics(self, model, starts=None):
        """Bits per character over the held-out windows (the first VAL_CHARS characters)."""
        starts = self.val_starts if starts is None else starts
        return {"val_bpc": self._nats(model, starts, self.T) / (len(starts) * self.T) / math.log(2),
                "unigram_bpc": self.unigram_bpc}

    def score_all(self, model):
        """Bits per character of the model over the whole file (for `fastlstm predict`): every
        character but the first, each predicted from those before it in its window of T, the
        last window shorter."""
        n = len(self.ids)
        if n < 2:
            raise DataError(f"{self.path}: {v.counted(n, 'character')}; a score needs two or more (the first is "
                            f"what the second is predicted from)")
        full, rest = divmod(n - 1, self.T)
        nats = self._nats(model, np.arange(full) * self.T, self.T) + (
            self._nats(model, np.array([full * self.T]), rest) if rest else 0.0)
        return {"bpc": nats / (n - 1) / math.log(2), "characters": n - 1}

    def spec(self):
        return dict(kind=self.kind, path=os.path.abspath(self.path), fingerprint=self.fingerprint,
                    settings=dict(T=self.T, val_fraction=self.val_fraction), vocab=self.vocab)


def _training(spec):
    """Whether the dataset is for training (new, or resumed) rather than for predict."""
    return spec is None or spec.get("check", True)


def _check_fingerprint(path, spec):
    fp = fingerprint(path)
    if spec is not None and _training(spec) and fp != spec["fingerprint"]:
        raise DataError(f"{path}: not the file this checkpoint was trained on (size and CRC-32 differ); "
                        "resume needs the same data")
    return fp


# -- CSV time series -----------------------------------------------------------------------

def _parse(cell):
    """A cell's number as CSV files write them, or None. Python's float() also reads '1_000'
    (a thousand) and digits of other scripts ('١٢'); no CSV writer means those as numbers."""
    if not cell.isascii() or "_" in cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _number(cell):
    x = _parse(cell)
    return x if x is not None and math.isfinite(x) else None


def _cut(text, limit=60):
    """text, cut at `limit` characters with '…' where it is longer."""
    return text if len(text) <= limit else text[:limit] + "…"


def _shown(cell):
    """A cell as the errors quote it: its repr, cut (_cut), and the lines it spans where a
    quote ran it over several (a stray quote's cell can hold the rest of the file, which the
    message would otherwise repeat)."""
    n = cell.count("\n") + 1
    return _cut(repr(cell)) + ("" if n == 1 else f" (one quoted cell over {n} lines: a quote left open?)")


def _not_a_number(cell, sep, decimal):
    """Why a cell that should hold a number does not: as the errors say it. A decimal comma
    says --decimal , (in a ','-separated file, where that option is refused, how to write it
    instead); a thousands separator ('1,234.5', '1.234,5' with decimal commas) says to drop it."""
    if _parse(cell) is not None:
        return f"{_shown(cell)} is not a finite number"
    why, c = f"{_shown(cell)} is not a number", cell.strip()
    if decimal == "." and c.count(",") == 1 and "." not in c and _number(c.replace(",", ".")) is not None:
        return why + (" (a decimal comma: pass --decimal ,)" if sep != "," else
                      " (a comma in a number: write the column without thousands separators, or, for decimal "
                      "commas, the file ';'-separated with --sep ';' --decimal ,)")
    mark = "," if decimal == "." else "."
    if mark in c and _number(c.replace(mark, "").replace(",", ".")) is not None:
        return why + f" (a thousands separator {mark!r}: write the column without them)"
    return why


def _first_bad(path, lines, cols, names, c, sep, decimal):
    """`path: line L, column C (name): why` for column c's first cell that is neither
    missing nor a finite number (the one that made the column text or time)."""
    line, cell = next((line, cell) for line, cell in zip(lines, cols[c])
                      if not _missing(cell) and _number(cell) is None)
    return f"{path}: line {line}, column {c + 1} ({names[c]!r}): {_not_a_number(cell, sep, decimal)}"


if sys.version_info >= (3, 11):
    _fromisoformat = _dt.datetime.fromisoformat
else:   # 3.10's reads only what its isoformat writes (no 'Z', no '20240131'): 3.11's, backported
    from backports.datetime_fromisoformat import datetime_fromisoformat as _fromisoformat


def _time(cell):
    """(seconds since the epoch, whether the cell gives a UTC offset; a time without one is
    taken as UTC), or None for a cell that is not an ISO date or time."""
    try:
        t = _fromisoformat(cell.strip())
    except ValueError:
        return None
    aware = t.tzinfo is not None
    return (t if aware else t.replace(tzinfo=_dt.timezone.utc)).timestamp(), aware


_DATE_LIKE = re.compile(r"[0-9]{1,4}[/.][0-9]{1,2}[/.][0-9]{1,4}\b")     # 01/31/2024, 31.01.2024, 2024/01/31
_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)?)?")


def _all_numbers(cells):
    """A column's cells (strings) as float64 when every one is a finite number that `_number`
    reads, else None. NumPy converts as float() does, in one call rather than a Python call a
    cell; '1_000' and other scripts' digits, which float() reads and `_parse` refuses, send
    the column to the cell-by-cell path, as does any missing or non-finite value. An array
    is a column read_csv converted already."""
    if isinstance(cells, np.ndarray):
        return cells
    joined = "".join(cells)
    if not joined.isascii() or "_" in joined:
        return None
    try:
        a = np.array(cells, dtype=np.float64)
    except ValueError:                               # a missing value, a word
        return None
    return a if np.isfinite(a).all() else None      # 'nan' is a missing value, 'inf' refused: cell by cell


def _all_times(cells):
    """A column's cells as `_time` reads them, seconds since the epoch, when every one is a
    date or time without an offset, else None. fromisoformat, then NumPy's datetime64 for the
    naive times as UTC: the same float, µs / 10⁶ rounded once, as datetime.timestamp() gives
    (exact while |µs| < 2⁵³, some 285 years either side of 1970)."""
    cells = [c.strip() for c in cells]
    try:
        t = [_fromisoformat(c) for c in cells]      # what is a time: fromisoformat decides
    except ValueError:
        return None
    if not cells or any(x.tzinfo is not None for x in t):
        return None
    # NumPy parses strings 30x faster than it converts datetime objects, but reads some forms
    # fromisoformat reads otherwise ('20240101' as a year): only the extended form goes to it
    us = np.array(cells if all(map(_ISO.fullmatch, cells)) else t, dtype="datetime64[us]").astype(np.int64)
    return us / 1e6 if np.abs(us).max() < 1 << 53 else None


def _looks_numeric(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return any(c.isdigit() for c in cell)          # not a column named "nan" or "inf"


def _listed(names, most=12, quote=False):
    """names joined by commas (repr'd with quote), the first `most` of a longer list and how
    many more: a wide file's header would fill the screen (and each name cut as _shown cuts a
    cell: a quote left open in the header makes one name of the lines after it)."""
    names = [_shown(n) if quote or "\n" in n else _cut(n) for n in names]
    return ", ".join(names[:most]) + (f", … and {len(names) - most} more" if len(names) > most else "")


def _header_hint(names, sep=","):
    """What to say when a header of one name holds another separator (a spreadsheet's ';'),
    or when the first line is numbers: a file without a header."""
    other = next((c for c in ";\t|," if len(names) == 1 and c != sep and c in names[0]), None)
    if other:
        name = choices.SEPARATOR_NAMES.get(other, other)
        return (f"; the header looks {other!r}-separated, and the cells were split at {sep!r}: pass --sep {name!r}"
                + (" (and --decimal , for decimal commas)" if other == ";" else ""))
    if all(map(_looks_numeric, names)):
        return "; the first line looks like data, not a header: a CSV series begins with a line of column names"
    return ""


def _columns(names, arg, path, what, sep=",", saved=False):
    """Column names from "a,b" or 1-based indices "2,3", or from a list of names and indices
    (Python's, and a checkpoint's names: saved, which a file must hold by name)."""
    if isinstance(arg, numbers.Integral) and not isinstance(arg, bool):
        arg = [arg]
    typed = isinstance(arg, str)                 # typed: "2" is column 2 unless a column has that name
    if typed:
        items = [s.strip() for s in arg.split(",") if s.strip()]
    elif isinstance(arg, (list, tuple)) and all(isinstance(a, (str, numbers.Integral)) and not isinstance(a, bool)
                                               for a in arg):
        items = list(arg)                        # a list: strings are names (a checkpoint's), integers numbers
    else:
        raise TypeError(f"{what} must be column names or numbers, as a string \"a,b\" or a list, got {arg!r}")
    out, known = [], set(names)                  # sets: a file may have 100,000 columns
    for item in items:
        number = None if isinstance(item, str) and not (typed and item.isdigit()) else int(item)
        if isinstance(item, str) and item in known:
            out.append(item)
        elif number is not None and 1 <= number <= len(names):
            out.append(names[number - 1])
        else:
            commas = [(n, i) for i, n in enumerate(names, 1) if "," in n]   # "a,b" cannot name them; numbers can
            hint = _header_hint(names, sep)         # first: one name "a,b,c" is a ','-separated file under --sep ';'
            if typed and commas and not hint:
                hint = "; a name with a comma goes by its number: " + ", ".join(
                    f"{_shown(n)} is {i}" for n, i in commas[:3])
            folded = item.casefold() if isinstance(item, str) else None
            cased = next((n for n in names if n.casefold() == folded), None)
            if cased is not None:
                hint += f"; {_shown(cased)} differs from it in case alone (names match exactly)"
            raise DataError(f"{path}: {what} {item!r} is not a column" + (
                f" of this file; its columns are: {_listed(names, quote=bool(commas))}" if saved else
                f"; the columns are: {_listed(names, quote=bool(commas))} (by name, or by number from 1)") + hint)
    if not out:
        raise DataError(f"{path}: {what} names no column")
    seen, twice = set(), None
    for n in out:
        if n in seen:
            twice = n
            break
        seen.add(n)
    if twice is not None:                          # by name and by number, say: two equal inputs or outputs
        raise DataError(f"{path}: {what} names column {twice!r} twice")
    return out


def column_list(path, sep=","):
    """The names on a CSV's first line, listed for a message ("date, temp", and what to pass
    where they look split at the wrong separator), or "" where that line cannot be read as
    a header (read_csv then says why)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
        names = [n.strip() for n in next(csv.reader([first.decode("utf-8-sig")], delimiter=sep))]
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration):
        return ""
    return _listed(names) + _header_hint(names, sep) if names and all(names) else ""


def _unnamed_hint(names, c, sep):
    """What to add where column c of the header `names` has no name: the two ways files come so."""
    if names[c] or len(names) < 2:
        return ""
    if c == 0:                                      # pandas' DataFrame.to_csv writes its index so
        return ": a row index, as pandas' DataFrame.to_csv writes one; save with index=False, or name the column"
    if c == len(names) - 1:
        return f": the header ends with {sep!r}; if every line does, remove the last {sep!r} from each"
    return ""


def read_csv(path, sep=",", decimal="."):
    """(names, kinds, lines, cols) of a CSV with a header, its cells separated by `sep`:
    cols[c] is column c's cells (str), or their float64 values where a plain file's column
    holds finite numbers alone, and lines (rows,) each row's line in the file, blank rows
    dropped; kinds[c] is "number", "time" or "text" (from the column's first present cell), or
    "empty" where every cell is missing.
    decimal=",": a column whose first present cell is a number with a decimal comma has its
    commas read as points (a spreadsheet's "3,14" with sep ";"). Ragged rows and bad UTF-8
    are refused with their place."""
    with open(path, "rb") as f:
        raw = f.read()
    _refuse_utf16(path, raw, ' (a spreadsheet\'s "CSV UTF-8")')
    nul = raw.find(b"\0")                               # before decoding: a .npz fails that first
    if nul >= 0:
        what = ("it is a zip archive, such as a .npz" if raw.startswith(ZIP) else
                "a NUL byte at line {}, column {}".format(*_where(path, nul)))
        raise DataError(f"{path}: not a CSV file ({what})")
    try:
        text = raw.decode("utf-8-sig")                   # a spreadsheet's byte-order mark is not a name
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e.start, e, ' (a spreadsheet\'s "CSV UTF-8")') from None
    del raw                                              # the copies a load holds at once bound its memory
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    unix = text.replace("\r\n", "\n")
    plain = '"' not in unix and "\r" not in unix        # no quoted cells, no \r line ends
    if plain:                                            # the csv module's records, by str methods
        split, text, unix = unix.split("\n"), None, None
        records = ((i, line.split(sep) if line else []) for i, line in enumerate(split, 1))
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
        records = _records(reader, path)
    names = [n.strip() for n in next(records)[1]]
    seen = {}
    for c, n in enumerate(names):
        if not n or n in seen:
            raise DataError(f"{path}: line 1: the header needs distinct, non-empty column names, and column {c + 1} "
                            + (f"repeats column {seen[n] + 1}'s name {n!r}" if n else "has none")
                            + f" (the header: {_listed(names, quote=True)})" + _unnamed_hint(names, c, sep))
        seen[n] = c
    lines, cols = _plain_columns(split, len(names), sep) if plain else (None, None)
    if cols is None:
        rows = []
        for line, row in records:
            if not row or not "".join(row).strip():       # blank, or only separators
                continue
            if (n := len(row)) != len(names):
                raise DataError(f"{path}: line {line}: {v.counted(n, 'cell')}, the header has {len(names)}"
                                + _header_hint(names, sep))
            rows.append((line, row))
        lines = np.array([line for line, _ in rows], np.int64)
        cols = [[r[c] for _, r in rows] for c in range(len(names))]
    if not len(lines):
        raise DataError(f"{path}: no data rows under the header")
    kinds = []
    for c, col in enumerate(cols):
        if isinstance(col, np.ndarray):                 # finite numbers already
            kinds.append("number")
            continue
        first = next((x for x in col if not _missing(x)), None)
        if decimal == "," and first is not None and _number(first.replace(",", ".")) is not None:
            cols[c] = [x.replace(",", ".") for x in col]     # a number with a decimal comma: the column's
            first = first.replace(",", ".")                     # commas read as points
        kinds.append("empty" if first is None else "number" if _number(first) is not None else
                     "time" if _time(first) is not None else "text")
    return names, kinds, lines, cols


def _plain_columns(split, n, sep):
    """(lines, cols) of the lines after the header when each holds n cells and none is blank
    (final empty lines aside), split by str methods with no list a row for the garbage
    collector to walk. CSV_BLOCK lines at a time become one list of cells, each column a
    slice of it; a column whose cells are all finite numbers so far is kept as float64
    (_all_numbers), not as strings of some 60 bytes a cell (docs/performance.md has the
    figures). Else (None, None): the rows are read one by one."""
    end = len(split)
    while end > 1 and not split[end - 1]:
        end -= 1
    body = split[1:end]
    if not body or set(map(str.count, body, repeat(sep))) != {n - 1} or \
            not all(map(str.strip, map(str.replace, body, repeat(sep), repeat("")))):
        return None, None
    values = [[] for _ in range(n)]                     # a column's float64 blocks, None once it is not numbers
    cols = [None] * n                                    # then its cells
    for b0 in range(0, len(body), CSV_BLOCK):
        cells = sep.join(body[b0:b0 + CSV_BLOCK]).split(sep)
        for c in range(n):
            a = None if values[c] is None else _all_numbers(cells[c::n])
            if a is not None:
                values[c].append(a)
                continue
            if values[c] is not None:                    # the earlier blocks' cells, read again
                cols[c], values[c] = [line.split(sep)[c] for line in body[:b0]], None
            cols[c].extend(cells[c::n])
    return np.arange(2, len(body) + 2), [np.concatenate(v) if v is not None else col for v, col in zip(values, cols)]


def _records(reader, path):
    """(line, record) of reader's records, line the one a record starts on (a quoted cell
    may hold line breaks; an editor's line, where reader.line_num is the record's last);
    a malformed one (a quote never closed, text after a closing quote) refused at its line:
    the lenient reader took the rest of the file as one cell."""
    while True:
        start = reader.line_num + 1
        try:
            yield start, next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise DataError(f"{path}: line {start}: a quoted cell opened on this line is never closed") from None
            raise DataError(f"{path}: line {reader.line_num}: {e}") from None


class Series:
    """Forecasting from a CSV with a header row: x (window, B, D) standardised features,
    y (B, horizon · targets) the standardised targets of the next `horizon` rows; MSE at the
    last step. The last `val_fraction` of rows is validation, in time order; the mean and
    standard deviation of every column come from the training rows alone. Metrics are in the
    data's units: RMSE and MAE beside the naive forecast (the last observed value) and, with
    `season`, the seasonal naive one (the value one season earlier). `sep` separates the
    cells (one character; "tab" names a tab; default: a tab for a .tsv, else a comma),
    `decimal` is "." or "," (read_csv)."""
    kind, loss, output, monitor = "series", "mse", "last", ("val_rmse", "min")

    def __init__(self, path, *, target, features=None, window=50, horizon=1, val_fraction=0.2, season=None,
                 fill=None, sep=None, decimal=".", _spec=None):
        self.path, self.window, self.horizon = path, v.integer("--window", window), v.integer("--horizon", horizon)
        self.T = self.window                                          # a training batch's steps
        self.val_fraction, self.fill = _fraction("--val-fraction", val_fraction), fill
        self.season = season = None if season is None else v.integer("--season", season)
        _check_settings((self.window >= 1, "--window", ">= 1", window), (self.horizon >= 1, "--horizon", ">= 1", horizon),
                        (season is None or season >= 1, "--season", ">= 1", season),
                        (0 < self.val_fraction < 1, "--val-fraction", "in (0, 1)", val_fraction),
                        (fill in (None, "ffill", "zero"), "--fill", "ffill or zero", fill))
        tsv = os.fspath(path).lower().endswith(".tsv")
        self.sep, self.decimal = _separators(("\t" if tsv else ",") if sep is None else sep, decimal)
        self.fingerprint = _check_fingerprint(path, _spec)
        names, kinds, lines, cols = read_csv(path, self.sep, self.decimal)
        at = {n: c for c, n in enumerate(names)}                      # names.index, in O(1) for wide files
        self.time_col = next((n for n, k in zip(names, kinds) if k == "time"), None)
        saved = _spec is not None                                     # the columns the model was trained on
        chose = ("the model's target", "the model's feature") if saved else ("--target", "--features")
        self.targets = _columns(names, target, path, chose[0], self.sep, saved)
        notes = []
        if all(map(_looks_numeric, names)):           # columns chosen by number: the first row would go unsaid
            notes.append(f"line 1, the header, is all numbers ({_listed(names)}): if the file has no header, "
                         f"its first row was read as one (add a line of column names)")
        if features is None:
            self.features = [n for n, k in zip(names, kinds) if k == "number"]
            text = [n for n, k in zip(names, kinds) if k == "text"]
            empty = [n for n, k in zip(names, kinds) if k == "empty"]
            if text or empty:                         # said, as a column the user counted on may be among them
                dated = next(((n, c.strip()) for n in text for c in cols[at[n]][:1]
                              if _DATE_LIKE.match(c.strip()) and not self.time_col), None)   # a locale's dates
                why = (f" (column {dated[0]!r}: {dated[1]!r} is not an ISO 8601 time, such as 2024-01-31 or "
                       f"2024-01-31 05:00, which would date the forecasts)" if dated else "")
                notes.append(f"the features are {_listed(self.features, quote=True)}; " + "; ".join(
                    f"{_listed(left, quote=True)} hold{'s' * (len(left) == 1)} {what} and "
                    f"{'is' if len(left) == 1 else 'are'} left out{why * (what == 'text')}"
                    for left, what in ((text, "text"), (empty, "no values")) if left))
        else:
            self.features = _columns(names, features, path, chose[1], self.sep, saved)
        targets = set(self.targets)
        for n in self.targets + self.features:
            if n not in at:
                raise DataError(f"{path}: no column {n!r}; the columns are: {_listed(names)}")
            if kinds[at[n]] == "empty":
                raise DataError(f"{path}: column {n!r} holds no values: each cell is empty or one of "
                                f"{', '.join(sorted(MISSING - {''}))}")
            if kinds[at[n]] == "text" or (n in targets and kinds[at[n]] != "number"):
                raise DataError(f"{_first_bad(path, lines, cols, names, at[n], self.sep, self.decimal)}; "
                                f"column {n!r} must be numeric")
        self.columns, self._f, self._t = _standardised(self.features, self.targets)
        self.lines = lines                                              # each row's line in the file
        self._aware = {}                        # per time column: (has a UTC offset, line, cell) of its first
        tc = at[self.time_col] if self.time_col else None
        self.times = times = self._times(tc, lines, cols[tc]) if self.time_col else None
        self.tz = (_fromisoformat(cols[tc][-1].strip()).tzinfo
                   if self.time_col else None)             # the last row's offset dates the output,
        self.form = time_form(cols[tc][-1]) if self.time_col else None     # written as that row is
        steps = np.diff(self.times) if self.times is not None else np.zeros(0)
        # Back in time: refused (shuffled rows, newest first), except by at most an hour, as local
        # time at an autumn clock change goes (02:30 then 02:00 again, half-hourly).
        median = np.median(steps) if len(steps) else np.nan          # one row: no step back, nor a step on
        back = np.flatnonzero(steps < (0 if median < 0 else -3600))   # newest first: any step back
        if len(back):
            i = back[0]
            raise DataError(f"{path}: line {lines[i + 1]}, column {tc + 1} ({self.time_col!r}): {cols[tc][i + 1]!r} "
                            f"goes back in time from line {lines[i]}'s {cols[tc][i]!r}: sort the rows oldest first")
        # dates on hourly rows, say, or one row: forecasts dated a median step on would repeat the last row's time
        if times is not None and (median == 0 or np.isnan(median)):
            notes.append(f"column {self.time_col!r} " + ("repeats its times (the median step between rows is 0)"
                                                         if median == 0 else "dates one row, no step to continue")
                         + ", so forecasts are numbered by step, not dated")
            self.time_col = self.times = None
        values = self._values(names, at, kinds, lines, cols, {tc: times})   # (rows, columns) in data units
        if features is None and not saved:
            notes += _counter_notes(self.features, targets, values[:, self._f], at)
        if self.times is not None and not saved:
            notes += _gap_notes(self.time_col, steps, median, self.times, self.tz, lines, cols[tc], self.window)
        self.note = "; ".join(notes) or None
        n = len(values)
        self.n_train = n - int(round(n * self.val_fraction))
        need = self.window + self.horizon
        if _training(_spec) and self.n_train < need:
            raise DataError(f"{path}: window + horizon = {need} rows, longer than the training part "
                            f"({self.n_train} of {v.counted(n, 'row')}); lower --window or --horizon")
        if _training(_spec) and n - self.n_train < self.horizon:
            raise DataError(f"{path}: the validation part ({v.counted(n - self.n_train, 'row')}) is shorter than the "
                            f"horizon ({self.horizon}); raise --val-fraction")
        if _training(_spec) and self.season and self.season > self.n_train:
            raise DataError(f"{path}: --season {self.season} is longer than the training part ({self.n_train} of {n} "
                            f"rows): the seasonal naive forecast needs a season of rows before the validation part")
        if _spec is not None:
            self.mean, self.std = np.array(_spec["mean"]), np.array(_spec["std"])
        else:
            train = values[:self.n_train]
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):    # under: np.seterr(all="raise")
                self.mean = train.mean(axis=0)
                std = train.std(axis=0)
                odd = ~((1e-150 < std) & (std < 1e150)) & np.isfinite(self.mean)
                std[odd] = [_scaled_rms(train[:, j] - self.mean[j]) for j in np.flatnonzero(odd)]
            self.std = np.where(std > 0, std, 1.0)
        self.values = values
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            self.z = (values - self.mean) / self.std
        self._check_scale(names, path)
        self.input_size, self.output_size = len(self.features), self.horizon * len(self.targets)
        self.size = max(0, self.n_train - need + 1)                     # training windows
        self.val_origins = np.arange(max(0, self.n_train - self.window), n - need + 1)
        self._cache = {}

    def _check_scale(self, names, path):
        """Refuse a cell too far from its column's scale for float32 once standardised (1e300
        in a column of ones), or one that makes the training rows' mean or standard deviation
        overflow: it would reach the model as ±inf or silently as 0."""
        big = float(np.finfo(np.float32).max)
        for j, col in enumerate(self.columns):
            stats_ok = np.isfinite(self.mean[j]) and np.isfinite(self.std[j])
            bad = np.flatnonzero(~(np.abs(self.z[:, j]) <= big)) if stats_ok else \
                [int(np.argmax(np.abs(self.values[:self.n_train, j])))]
            if len(bad):
                i, c = bad[0], names.index(col)
                raise DataError(f"{path}: line {self.lines[i]}, column {c + 1} ({col!r}): {self.values[i, j]:g} is "
                                f"too large for the column's scale (the training rows' mean {self.mean[j]:.3g}, "
                                f"standard deviation {self.std[j]:.3g}); fix the value or leave the column out")

    def _times(self, c, lines, cells):
        """Column c's cells as seconds since the epoch (a naive time is taken as UTC)."""
        fast = _all_times(cells)
        if fast is not None:
            return fast
        return np.array([self._time_at(line, c, self.time_col, cell) for line, cell in zip(lines, cells)], np.float64)

    def _time_at(self, line, c, name, cell):
        """Column c's cell at `line` in seconds; the column's first cell read sets whether its
        times give a UTC offset, as pandas refuses a column that mixes them."""
        t = _time(cell)
        if t is None:
            why = ("a missing time: every row needs its time (--fill fills numbers)"
                   if _missing(cell) else f"{_shown(cell)} is not a date or time")
            raise DataError(f"{self.path}: line {line}, column {c + 1} ({name!r}): {why}")
        first = self._aware.setdefault(c, (t[1], line, cell))
        if t[1] != first[0]:
            raise DataError(f"{self.path}: line {line}, column {c + 1} ({name!r}): {_shown(cell)} "
                            f"{'has no' if first[0] else 'has a'} UTC offset, and line {first[1]}'s {_shown(first[2])} "
                            f"{'has one' if first[0] else 'none'}: give every time of a column an offset, or none")
        return t[0]

    def _values(self, names, at, kinds, lines, cols, parsed):
        """(rows, columns) of self.columns in data units. A column of numbers or times alone is
        converted at once; the others go cell by cell, row after row (so the first bad cell
        named is the first in the file), filling missing values as --fill says. at: each
        name's column; parsed: the columns already converted, {column: values} (the time
        column's seconds)."""
        idx = [at[n] for n in self.columns]
        out = np.empty((len(lines), len(idx)))
        slow = []
        for j, c in enumerate(idx):
            fast = parsed[c] if c in parsed else (_all_times if kinds[c] == "time" else _all_numbers)(cols[c])
            if fast is None:
                slow.append((j, c))
            else:
                out[:, j] = fast
        last = [None] * len(idx)
        for i, line in enumerate(lines) if slow else ():
            for j, c in slow:
                cell = cols[c][i]
                if kinds[c] == "time":
                    x = self._time_at(line, c, names[c], cell)
                elif _missing(cell):
                    if self.fill == "zero":
                        x = 0.0
                    elif self.fill == "ffill" and last[j] is not None:
                        x = last[j]
                    else:
                        why = ("nothing earlier to carry forward" if self.fill == "ffill" else
                               "pass --fill ffill or --fill zero to fill missing values")
                        raise DataError(f"{self.path}: line {line}, column {c + 1} ({names[c]!r}): "
                                        f"missing value ({why})")
                else:
                    x = _number(cell)
                    if x is None:
                        raise DataError(f"{self.path}: line {line}, column {c + 1} ({names[c]!r}): "
                                        f"{_not_a_number(cell, self.sep, self.decimal)}")
                out[i, j] = last[j] = x
        return out

    def windows(self, origins, dtype=np.float32):
        """x (window, B, D), y (B, horizon·targets), standardised, for windows starting at
        `origins` (rows i .. i+window-1 in, rows i+window .. i+window+horizon-1 out)."""
        key = (len(origins), np.dtype(dtype))
        if key not in self._cache:
            self._cache = {key: (np.empty((self.window, len(origins), self.input_size), dtype),
                                 np.empty((len(origins), self.horizon, len(self._t)), dtype),
                                 self.z[:, self._f].astype(dtype), self.z[:, self._t].astype(dtype))}
        x, y, zf, zt = self._cache[key]
        np.take(zf, origins[None, :] + np.arange(self.window)[:, None], axis=0, out=x, mode="clip")
        np.take(zt, origins[:, None] + self.window + np.arange(self.horizon)[None, :], axis=0, out=y, mode="clip")
        return x, y.reshape(len(origins), -1), None

    def take(self, index, dtype=np.float32):
        return self.windows(np.asarray(index), dtype)

    @_time_major
    def forecast(self, model, origins):
        """Forecasts (len(origins), horizon, targets) in the data's units."""
        out = np.empty((len(origins), self.horizon, len(self._t)))
        for b0, b1 in _batches(len(origins), 512):
            x, _, _ = self.windows(origins[b0:b1], model.dtype)
            out[b0:b1] = model.predict(x).reshape(b1 - b0, self.horizon, -1)
        return out * self.std[self._t] + self.mean[self._t]

    def actual(self, origins):
        rows = origins[:, None] + self.window + np.arange(self.horizon)[None, :]
        return self.values[:, self._t][rows]                           # (N, horizon, targets)

    def scores(self, model, origins):
        """RMSE and MAE of the model, the naive and the seasonal naive forecasts, in the data's units."""
        pred, true = self.forecast(model, origins), self.actual(origins)
        naive = np.repeat(self.values[:, self._t][origins + self.window - 1][:, None], self.horizon, axis=1)
        m = dict(val_rmse=_rmse(pred, true), val_mae=_mae(pred, true),
                 naive_rmse=_rmse(naive, true), naive_mae=_mae(naive, true))
        m["skill"] = _skill(m["val_rmse"], m["naive_rmse"])
        if self.season:
            k = np.arange(self.horizon)
            back = self.season * ((k + self.season) // self.season)    # whole seasons back from t + k
            rows = origins[:, None] + self.window + k[None, :] - back[None, :]
            ok = (rows >= 0).all(axis=1)           # a backtest's first season has no seasonal forecast:
            seasonal = self.values[:, self._t][np.maximum(rows, 0)]    # both sides over the windows that do
            m["seasonal_rmse"] = _rmse(seasonal[ok], true[ok]) if ok.any() else float("nan")
            model_rmse = _rmse(pred[ok], true[ok]) if ok.any() else float("nan")
            m["seasonal_skill"] = _skill(model_rmse, m["seasonal_rmse"])
        return m

    def metrics(self, model):
        return {k: s for k, s in self.scores(model, self.val_origins).items() if math.isfinite(s)}

    @_time_major
    def next_forecast(self, model):
        """(timestamps or None, (horizon, targets)) for the `horizon` rows after the file's end."""
        n = len(self.values)
        if n < self.window:
            raise DataError(f"{self.path}: {v.counted(n, 'row')}, fewer than the window ({self.window})")
        origin = np.array([n - self.window])
        x = np.ascontiguousarray(self.z[origin[0]:, self._f][:, None, :], model.dtype)
        pred = model.predict(x).reshape(self.horizon, -1) * self.std[self._t] + self.mean[self._t]
        if self.times is None:
            return None, pred
        return times_after(self.times[-min(n, self.window + 1):], self.horizon, self.tz), pred

    def stamp(self, t):
        """A time (seconds since the epoch) as the file writes its times."""
        return iso(t, self.tz, self.form)

    def spec(self):
        return dict(kind=self.kind, path=os.path.abspath(self.path), fingerprint=self.fingerprint,
                    settings=dict(target=self.targets, features=self.features, window=self.window,
                                  horizon=self.horizon, val_fraction=self.val_fraction, season=self.season,
                                  fill=self.fill, sep=self.sep, decimal=self.decimal),
                    mean=self.mean.tolist(), std=self.std.tolist(), time_col=self.time_col)


def _counter_notes(features, targets, x, at):
    """[] or the note for the default features (not targets, a set) that rise by one step on
    every row, as a row number or a Unix time does: past the training rows their values are
    ones the model never saw, so they are said, with the --features that leave them out.
    x (rows, features): their values; at: each name's column in the file (from 0)."""
    if len(x) < 3:
        return []
    with np.errstate(over="ignore", invalid="ignore"):    # cells near float64's range (refused later)
        d = np.diff(x, axis=0)                            # one pass: a file may have 100,000 columns
        rising = (d[0] > 0) & (np.ptp(d, axis=0) <= 1e-9 * d[0])
    counters = {n: f"{d[0, j]:g}" for j in np.flatnonzero(rising) if (n := features[j]) not in targets}
    if not counters:
        return []
    rest = [str(at[n] + 1) if "," in n else n for n in features if n not in counters]
    one = len(counters) == 1
    return [f"{_listed(counters, quote=True)} rise{'s' * one} by the same step on every row "
            f"({', '.join(counters.values())}), as a row number or a Unix time does: as {'a ' * one}feature{'s' * (not one)}, "
            f"{'its' if one else 'their'} values past the training rows are ones the model never saw"
            + (f" (--features {','.join(rest)} leaves {'it' if one else 'them'} out)" if rest else "")]


def _span(seconds):
    """A step of time as a person says it: '15 minutes', '1 hour', '2.5 days'."""
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= n or unit == "second":
            q = float(f"{seconds / n:.3g}")
            return f"{q:g} {unit}{'s' * (q != 1)}"


def _gap_notes(name, steps, median, times, tz, lines, cells, window):
    """[] or the note for a time column whose rows skip ahead: a step longer than 1.5 times
    the median step (missing rows: an outage, a gap in a sensor's log). The rows are still
    read as consecutive steps, so a window spans more time where it holds one; said, not
    refused (market data skips nights and holidays by design). Not a gap: an hour missing
    early on a Sunday from naive times (local time at a spring clock change, which such
    times do not tell from a missing row; times with offsets run on through it), nor a
    Friday-to-Monday step of rows dated on weekdays alone (business days). tz: the last
    row's offset (None: naive times, read as UTC), for the days of the week."""
    if not median > 0:
        return []
    local = times + (tz.utcoffset(None).total_seconds() if tz else 0)     # the clock the file shows
    weekday = lambda t: (np.floor(t / 86400).astype(np.int64) + 3) % 7    # noqa: E731  (1970-01-01: a Thursday)
    gone = local[:-1] + median                                 # the first time missing after each row
    spring = ((steps == median + 3600) & (gone % 86400 < 4 * 3600) & (weekday(gone) == 6)    # Sunday, 00:00-04:00
              & (tz is None))
    skip = (steps > 1.5 * median) & ~spring
    days = weekday(local)                                      # Monday 0 ... Sunday 6
    if median == 86400 and (days < 5).all():
        skip &= ~((steps == 3 * 86400) & (days[:-1] == 4))
    if not skip.any():
        return []
    i = np.flatnonzero(skip)[np.argmax(steps[skip])]
    n = int(skip.sum())
    return [f"column {name!r} skips ahead {'once' if n == 1 else f'{n} times'} against a median step of "
            f"{_span(median)} (the {'step' if n == 1 else 'longest'}, {_span(steps[i])}, from line {lines[i]}'s "
            f"{cells[i].strip()!r} to line {lines[i + 1]}'s {cells[i + 1].strip()!r}): the rows are read as "
            f"consecutive steps, so a window of {window} rows spans more time where it holds a gap (fill in the "
            f"missing rows to keep it even)"]


def _standardised(features, targets):
    """The columns a series standardises (its features, then the targets not among them),
    and the features' and the targets' indices among them."""
    columns = list(dict.fromkeys(features + targets))
    at = {c: j for j, c in enumerate(columns)}
    return columns, [at[c] for c in features], [at[c] for c in targets]


def series_scale(spec):
    """(mean_x, std_x, mean_y, std_y) of a series run (its checkpoint's Series.spec()): the
    features' standardisation, and the targets' for each of the horizon's rows, in the
    model's output order (horizon, targets), so that x_std = (x - mean_x) / std_x and a
    forecast in the data's units is P · std_y + mean_y (export_onnx's `scale`)."""
    st = spec["settings"]
    _, f, t = _standardised(st["features"], st["target"])
    mean, std = np.asarray(spec["mean"], np.float64), np.asarray(spec["std"], np.float64)
    return mean[f], std[f], np.tile(mean[t], st["horizon"]), np.tile(std[t], st["horizon"])


def times_after(times, horizon, tz=None):
    """The `horizon` times (seconds since the epoch) after the rows' times[-1], continuing
    their calendar as pandas infers a frequency: k months apart when every step is k months
    on one day of the month, or on each month's last day (monthly, quarterly, yearly rows:
    a median step of 31 days dated the third forecast of monthly rows the 4th); weekdays
    only when the rows are daily and never on a weekend (business days); else one median
    step apart. tz: the rows' UTC offset (None: naive times, read as UTC)."""
    t = np.asarray(times, np.float64)
    ahead = np.arange(1, horizon + 1)
    if len(t) < 2:                                 # Series reads such a column as undated
        raise ValueError(f"times_after needs two or more times to continue, got {len(t)}")
    d = [_dt.datetime.fromtimestamp(x, tz or _dt.timezone.utc) for x in t]
    last, clock = d[-1], {x.timetz() for x in d}
    months = {(b.year - a.year) * 12 + b.month - a.month for a, b in zip(d, d[1:])}
    if len(clock) == 1 and len(months) == 1 and (k := months.pop()) >= 1:
        ends = all(x.day == _month_days(x.year, x.month) for x in d)
        if ends or len({x.day for x in d}) == 1:
            out = []
            for j in ahead:
                y, m = divmod(last.month - 1 + k * int(j), 12)
                y, m = last.year + y, m + 1
                out.append(last.replace(year=y, month=m, day=_month_days(y, m) if ends else last.day).timestamp())
            return np.array(out)
    gap = np.median(np.diff(t))
    if gap == 86400 and len(clock) == 1 and len(d) >= 5 and all(x.weekday() < 5 for x in d):
        out, x = [], last
        while len(out) < horizon:
            x += _dt.timedelta(days=1)
            if x.weekday() < 5:
                out.append(x.timestamp())
        return np.array(out)
    return t[-1] + gap * ahead


def _month_days(year, month):
    return (_dt.date(year + month // 12, month % 12 + 1, 1) - _dt.timedelta(days=1)).day


def _scaled_rms(d):
    """sqrt(mean(d²)) with d scaled by its largest |value| first, as LAPACK's nrm2: squares
    of 1e-170 underflow to 0 (a column of such values read as constant, its RMSE as 0) and
    of 1e300 overflow, where the scaled ones keep every digit."""
    top = np.abs(d).max(initial=0)
    if not 0 < top < np.inf:
        return float(top)
    with np.errstate(under="ignore"):                 # the squares of values far below the largest: 0
        return float(top * np.sqrt(np.mean((d / top) ** 2)))


def _rmse(a, b):
    return _scaled_rms(a - b)


def _mae(a, b):
    return float(np.mean(np.abs(a - b)))


def _skill(rmse, reference):
    """1 − rmse / reference (above 0: better than the reference forecast). A reference that
    is exact (a constant target, for the naive forecast) leaves 0 for an exact model and
    −inf for any other, not 0; NaN without a reference. metrics() reports finite ones."""
    if reference > 0:
        return 1 - rmse / reference
    return (0.0 if rmse == 0 else -math.inf) if reference == 0 else math.nan


_FORM = re.compile(r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}"              # the date, then: the separator and hours,
                   r"(?:([Tt ])[0-9]{2}(?::?([0-9]{2})"            # minutes,
                   r"(?::?([0-9]{2})(?:[.,]([0-9]+))?)?)?)?")      # seconds and a fraction
_SPECS = ("hours", "minutes", "seconds", "milliseconds", "microseconds")


def time_form(cell):
    """How a time column writes its times, read from one cell: (separator of date and time or
    None for a bare date, the precision as an index into _SPECS, whether UTC is written 'Z')."""
    cell = cell.strip()
    m = _FORM.match(cell)
    if m is None:
        return "T", 2, False
    sep, minutes, seconds, fraction = m.groups()
    spec = (0 if minutes is None else 1 if seconds is None else 2 if fraction is None
            else 3 if len(fraction) <= 3 else 4)
    return sep and sep.upper(), spec, cell[-1:] in "Zz"


def iso(t, tz, form):
    """An ISO timestamp from seconds since the epoch: in tz (a datetime.tzinfo, written with
    its offset, as the file's times had it) or, with None, naive UTC; in the form
    `time_form` read from the file, with more precision where t needs it (a bare date's
    column dates a forecast that falls within a day with its time)."""
    sep, spec, z = form
    t = _dt.datetime.fromtimestamp(float(t), tz or _dt.timezone.utc)
    t = t if tz else t.replace(tzinfo=None)
    need = (4 if t.microsecond % 1000 else 3 if t.microsecond else 2 if t.second else 1 if t.minute
            else 0 if t.hour else -1)
    if sep is None and need < 0:
        return t.date().isoformat()
    s = t.isoformat(sep=sep or "T", timespec=_SPECS[max(spec, need, 1 if sep is None else 0)])
    return s[:-6] + "Z" if z and s.endswith("+00:00") else s


# -- arrays --------------------------------------------------------------------------------

class Arrays:
    """Labelled sequences from a .npz: `x` (N, T, D) (layout "batch") or (T, N, D) ("time"),
    `y` integer class labels (N,) (classification: cross-entropy at each row's last step) or
    float targets (N,) or (N, O) (regression: MSE), optional `lengths` (N,) in 1..T. A seeded
    split holds out `val_fraction` of the rows. Model.fit of an output="every" model gives
    output="every": y then holds a target per step, laid out as x, labels (T, N) or values
    (T, N) or (T, N, O) (or (N, T, ...) with layout "batch"), and steps past a row's length
    count for nothing. Model.fit of a model with an embedding gives tokens=vocab_size: x then
    holds token ids (T, N) (or (N, T)). Model.fit gives the layout of the model's batch_first."""
    kind = "arrays"
    monitor = ("val_loss", "min")

    def __init__(self, path, *, layout="batch", val_fraction=0.2, seed=0, _spec=None, _arrays=None,
                 validation=None, output="last", tokens=None, holdout=None):
        self.path, self.layout, self.seed = path, layout, v.integer("--seed", seed)
        self._fit = _arrays is not None                 # Model.fit's arrays: errors speak of its arguments
        self.val_fraction = _fraction("--val-fraction", val_fraction)
        self.output, self.tokens = output, tokens
        _check_settings((layout in ("batch", "time"), "--layout", "batch or time", layout),
                        (output in choices.OUTPUTS, "--output", " or ".join(choices.OUTPUTS), output),
                        (0 < self.val_fraction < 1, "--val-fraction", "in (0, 1)", val_fraction))
        self.fingerprint = None if _arrays is not None else _check_fingerprint(path, _spec)
        arrays, unread = (_arrays, []) if _arrays is not None else _read_npz(path, _training(_spec))
        x, y, lengths, classes = self._check(*arrays)
        self.note = (f"{', '.join(map(repr, unread))} in the file {'is' if len(unread) == 1 else 'are'} not read "
                     f"({NPZ_HOLDS})") if unread else None
        N = x.shape[1]
        if validation is not None:                  # Model.fit: the validation rows follow the training rows
            xv, yv, Lv, vclasses = self._check(*validation, p=f"{path}'s validation")
            n = self._n_axis
            if (xv.shape[0] != x.shape[0] or xv.shape[2:] != x.shape[2:] or classes != vclasses
                    or yv.shape[:n] + yv.shape[n + 1:] != y.shape[:n] + y.shape[n + 1:]):
                dims = ("(B, T" if self.layout == "batch" else "(T, B") + (")" if tokens else ", D)")
                raise ValueError(f"validation must be like the training data: x {dims} with T = {x.shape[0]}" + (
                    "" if tokens else f" and D = {x.shape[2]}") + " (pad with lengths), and targets of the same kind "
                    f"and shape but for the number of sequences; got x {np.shape(validation[0])} and targets "
                    f"{np.shape(validation[1])} against x {np.shape(arrays[0])} and targets {np.shape(arrays[1])}")
            x, y = _cat(x, xv, 1), _cat(y, yv, n)
            lengths = None if lengths is None and Lv is None else _cat(
                _full(lengths, N, x.shape[0]), _full(Lv, xv.shape[1], x.shape[0]), 0)
            self.val_rows, self.train_rows = np.arange(N, x.shape[1]), np.arange(N)
        elif holdout is not None:                   # Model.fit's validation_split: the last rows, as Keras's
            n_train = int(N * (1 - holdout))
            if not 0 < n_train < N:
                raise DataError(f"{path}: {v.counted(N, 'sequence')} cannot be split into training and "
                                f"validation parts at validation_split={holdout}; each part needs at least one")
            self.val_rows, self.train_rows = np.arange(n_train, N), np.arange(n_train)
        elif _training(_spec) and _arrays is None:
            order = np.random.default_rng(self.seed).permutation(N)
            n_val = int(round(N * self.val_fraction))
            if n_val < 1 or n_val >= N:
                raise DataError(f"{path}: {v.counted(N, 'sequence')} cannot be split into training and "
                                f"validation parts at --val-fraction {self.val_fraction} (it holds out "
                                f"{n_val}); each part needs at least one")
            self.val_rows, self.train_rows = np.sort(order[:n_val]), order[n_val:]
        else:                                        # predict, or Model.fit without validation
            self.val_rows, self.train_rows = np.arange(0), np.arange(N)
        self.x, self.y, self.lengths = x, y, lengths                  # x time-major (T, N, D)
        self.size, self.T = len(self.train_rows), x.shape[0]
        self.input_size = None if tokens else x.shape[2]             # ids: the model's embedding gives D
        if _spec and y is not None and classes != _spec["classes"]:      # predict: the checkpoint's kind
            raise DataError(f"{path}: y holds {'class labels' if classes else 'float targets'}, and the checkpoint "
                            f"was trained on {'class labels' if _spec['classes'] else 'float targets'}")
        self.classes = _spec["classes"] if _spec else classes
        self.loss = "xent" if self.classes else "mse"
        if _spec:
            self.output_size = int(_spec["settings_out"])
        else:
            self.output_size = int(y.max()) + 1 if self.classes else y.shape[-1]
            if self.classes and self.output_size < 2 and _arrays is None:      # (fit: the model says it)
                raise DataError(f"{path}: y's class labels are all 0, one class: a classifier needs two or more "
                                f"(labels 0..C-1), or float targets for regression")
        if y is not None and self.size:
            train, val = self._counted(self.train_rows), self._counted(self.val_rows)
            if self.classes:
                train_counts = np.bincount(train, minlength=self.output_size)
                self.majority = float(np.mean(val == train_counts.argmax())) if len(val) else 0.0
            else:
                self.train_mean = train.mean(axis=0)
        self._buf, self._xd = None, {}

    @property
    def _n_axis(self):
        """y's axis of sequences: 0 for a target per sequence, 1 for a target per step (T, N, ...)."""
        return int(self.output == "every")

    def _rows(self, a, rows):
        """a's entries for sequences `rows` (a shaped as y)."""
        return a[:, rows] if self.output == "every" else a[rows]

    def _counted(self, rows, a=None):
        """The targets of `rows` that count, (n,) labels or (n, O) values, from y or from `a`,
        shaped as y's rows (predictions): every row's, or with a target per step those at
        steps within the row's length."""
        a = self._rows(self.y, rows) if a is None else a
        if self.output == "last":
            return a
        L = None if self.lengths is None else self.lengths[rows]
        return a[_within(self.T, _full(L, len(rows), self.T))]

    def _check(self, x, y, lengths, p=None):
        """(x as (T, N, D) C-contiguous float32 or float64, y, lengths, classes) checked: classes
        is True for integer labels, False for float targets, None without y (predict). p: what
        errors name (default: the file). x is not copied when it is so already (Model.fit's
        float32 arrays): a float64 copy held 2x the data, and its cast 1x more."""
        p = p or self.path
        if isinstance(x, (list, tuple)):            # Model.fit's x as nested lists, as Keras's fit takes it (as y)
            try:
                x = np.asarray(x)
            except ValueError:                      # ragged: NumPy refuses an inhomogeneous shape
                raise DataError(f"{p}: x is a list of sequences of different shapes: pad them to one length T "
                                f"as an array {'(T, N, D)' if self.layout == 'time' else '(N, T, D)'} and give "
                                f"each one's length in lengths") from None
        if self.tokens:
            return self._check_targets(self._check_ids(x, p), y, lengths, p)
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.dtype.kind not in "fiu":
            want = ("(T, N, D)" if self.layout == "time" else       # Model.fit's: as the model's batch_first
                    "(N, T, D)" + (", or (T, N, D) with --layout time" if not self._fit else ""))
            got = f"shape {x.shape} dtype {x.dtype}" if isinstance(x, np.ndarray) else f"a {type(x).__name__}"
            ids = (f" (token ids {'(T, N)' if self.layout == 'time' else '(N, T)'} need a model with an embedding: "
                   f"vocab_size=...)"
                   if self._fit and isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind in "iu" else "")
            one = (f" (for one feature a step, {'pass' if self._fit else 'save'} x[..., None], of D = 1)"
                   if isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind == "f" else "")
            raise DataError(f"{p}: x must be a numeric array {want}, got {got}{ids}{one}")
        x = x.transpose(1, 0, 2) if self.layout == "batch" else x
        T, N, D = x.shape
        if min(T, N, D) < 1:
            raise DataError(f"{p}: x has an empty dimension: (T, N, D) = {x.shape}")
        bad = v.first_nonfinite(x) if x.dtype.kind == "f" else None
        if bad is not None:                          # named as the file or the caller holds it
            L = self._check_lengths(lengths, N, T, p)
            raise DataError(f"{p}: x holds {x[bad]} at {self._at(bad, 't, n, d')}{v.padded_hint(bad, L, 'inputs')}")
        return self._check_targets(_floats(x), y, lengths, p)

    def _check_ids(self, x, p):
        """Token ids x (T, N) (layout "time") or (N, T) in 0..tokens-1, as time-major int64
        (Model.fit of a model with an embedding)."""
        axes = "(T, N)" if self.layout == "time" else "(N, T)"
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind not in "iu":
            got = f"shape {x.shape} dtype {x.dtype}" if isinstance(x, np.ndarray) else f"a {type(x).__name__}"
            raise DataError(f"{p}: this model embeds tokens, so x holds integer token ids {axes}, got {got}")
        if min(x.shape) < 1:
            raise DataError(f"{p}: x has an empty dimension: {axes} = {x.shape}")
        if x.min() < 0 or x.max() >= self.tokens:
            i, j = map(int, np.unravel_index(np.argmax((x < 0) | (x >= self.tokens)), x.shape))
            raise DataError(f"{p}: token ids must lie in 0..{self.tokens - 1} (the model's vocab_size is "
                            f"{self.tokens}), and x[{i}, {j}] is {x[i, j]}")
        return np.ascontiguousarray(x if self.layout == "time" else x.T, np.int64)

    def _check_targets(self, x, y, lengths, p):
        """(x, y, lengths, classes) with y and lengths checked against x's (T, N)."""
        T, N = x.shape[:2]
        if y is None:                                # predict: a file without targets
            return x, None, self._check_lengths(lengths, N, T, p), None
        y = np.asarray(y)
        given = y.shape
        swap = self.output == "every" and self.layout == "batch" and y.ndim >= 2
        if swap:                                     # (N, T, ...) as x: time-major, as the model takes it
            y = np.swapaxes(y, 0, 1)
        lead = (T, N) if self.output == "every" else (N,)
        if y.dtype.kind in "iu" and y.shape == lead:
            L = self._check_lengths(lengths, N, T, p)
            # a label past a row's length counts for nothing (PyTorch pads with ignore_index -100)
            real = y if L is None or self.output == "last" else np.where(_within(T, L), y, 0)
            if real.min() < 0:
                *t, n = map(int, np.unravel_index(np.argmax(real < 0), y.shape))
                raise DataError(f"{p}: class labels y are indices 0..C-1, and sequence {n} has label "
                                f"{y[(*t, n)]}" + "".join(f" at step {t}" for t in t))
            if real.max() >= MAX_CLASSES:                # (a mistake, such as ids for labels: the head
                raise DataError(f"{p}: class labels y must lie in 0..{MAX_CLASSES - 1} (class indices 0..C-1), "
                                f"got min {real.min()}, max {real.max()}")  # would have max + 1 outputs)
            classes = True
            y = real.astype(np.int64)
        elif y.dtype.kind == "f" and y.shape[:len(lead)] == lead and y.ndim <= len(lead) + 1:
            L = self._check_lengths(lengths, N, T, p)
            bad = v.first_nonfinite(y)
            if bad is not None:
                where = (f"sequence {bad[0]}" if len(bad) == 1 else
                         self._at(bad, ("t, n" if len(lead) == 2 else "n") + ", o" * (y.ndim > len(lead))))
                hint = v.padded_hint(bad, L) if self.output == "every" else ""
                raise DataError(f"{p}: y holds {y[bad]} at {where}{hint}")
            classes = False
            y = y.reshape(lead + (-1,)).astype(np.float64)
        elif self.output == "every" and self.layout == "batch":
            raise DataError(f"{p}: with {'output=' + repr('every') if self._fit else '--output every'}, y holds a "
                            f"target per step, laid out as x: integer class "
                            f"labels (N, T) or float targets (N, T) or (N, T, O), with N = {N} sequences and "
                            f"T = {T} steps; got shape {given} dtype {y.dtype}")
        elif self.output == "every":
            raise DataError(f"{p}: this model predicts at every step (output='every'), so y holds a target per "
                            f"step, time-major as x: integer class labels (T, N) or float targets (T, N) or "
                            f"(T, N, O), with T = {T} steps and N = {N} sequences; got shape {y.shape} dtype "
                            f"{y.dtype}" + ("; for y of shape (N, T, ...) pass np.swapaxes(y, 0, 1)"
                                            if y.shape[:2] == (N, T) != (T, N) else "") + v.bool_hint(y))
        else:
            column = v.last_axis_hint(y, lead) if y.dtype.kind in "iu" else ""
            if self.layout == "time":
                fix = ("x is time-major (T, N, D) here; for x of shape (N, T, D) pass np.swapaxes(x, 0, 1)"
                       + (" (or make the model with batch_first=True)" if self._fit else ""))
            else:
                fix = ("this model is batch_first, so x is (N, T, D): for x of shape (T, N, D) pass "
                       "np.swapaxes(x, 0, 1)" if self._fit else "an x saved as (T, N, D) takes --layout time")
            swapped = (column if not y.ndim or y.shape[0] != T or T == N    # the commonest mistake: x's axes
                       else f"; y has a row for each of x's T = {T} steps: {fix}")
            if T != N and y.shape[:2] == ((T, N) if self.layout == "time" else (N, T)):    # a target per step
                swapped = "; a target per step " + ("needs a model built with output='every'" if self._fit
                                                    else "takes --output every")
            raise DataError(f"{p}: y must be integer class labels (N,) or float targets (N,) or (N, O) for "
                            f"N = {N} sequences, got shape {y.shape} dtype {y.dtype}{swapped}{v.bool_hint(y)}")
        return x, y, L, classes

    def _check_lengths(self, lengths, N, T, p):
        if lengths is None:
            return None
        lengths = np.asarray(lengths)
        if lengths.dtype.kind not in "iu" or lengths.shape != (N,):
            raise DataError(f"{p}: lengths must be integers of shape ({N},), got shape {lengths.shape} "
                            f"dtype {lengths.dtype}")
        if N and (lengths.min() < 1 or lengths.max() > T):
            raise DataError(f"{p}: lengths must lie in 1..{T}, got min {lengths.min()}, max {lengths.max()}")
        return lengths.astype(np.int64)

    def take(self, index, dtype=np.float32, rows=None):
        """x (T, B, D) (token ids (T, B)) in a buffer reused while B stays, y, lengths of
        training examples `index` (or of `rows` of the whole array)."""
        rows = self.train_rows[np.asarray(index)] if rows is None else rows
        dtype = np.dtype(dtype)
        if dtype not in self._xd:
            self._xd = {dtype: self.x if self.tokens else self._cast("x", self.x, dtype, "t, n, d")}
            if self.y is not None and not self.classes:
                self._cast("y", self.y, dtype, "t, n, o" if self._n_axis else "n, o")
        x = self._xd[dtype]
        if self._buf is None or self._buf.shape[1] != len(rows) or self._buf.dtype != x.dtype:
            self._buf = np.empty((x.shape[0], len(rows)) + x.shape[2:], x.dtype)
        np.take(x, rows, axis=1, out=self._buf, mode="clip")
        L = None if self.lengths is None else self.lengths[rows]
        y = None if self.y is None else self._rows(self.y, rows)
        return self._buf, y if y is None or self.classes else np.ascontiguousarray(y, dtype), L

    def _cast(self, name, a, dtype, axes):
        """a in the model's dtype; DataError at the first value that dtype cannot hold (1e300
        in float32), which would reach the model as inf."""
        with np.errstate(over="ignore"):
            out = a.astype(dtype, copy=False)
        bad = v.first_nonfinite(out)
        if bad is not None:
            raise DataError(f"{self.path}: {name} holds {a[bad]:g} at {self._at(bad, axes)}, beyond {dtype.name}'s "
                            f"range (rescale it, or train in float64)")
        return out

    def _at(self, index, axes):
        """'(axes) = index' for an index into a time-major array ("t, n, ..."), named as the
        file or the caller holds it: (n, t, ...) in layout "batch"."""
        if self.layout == "batch" and axes.startswith("t, n"):
            index, axes = (index[1], index[0], *index[2:]), "n, t" + axes[4:]
        return f"({axes}) = {tuple(int(i) for i in index)}"

    @_time_major
    def predict(self, model, rows=None):
        """Class probabilities (N, C) or values (N, O) for `rows` (default: every row); (T, N, ·)
        with a target per step."""
        rows = np.arange(self.x.shape[1]) if rows is None else rows
        out = np.empty((self.T,) * self._n_axis + (len(rows), self.output_size))
        for b0, b1 in _batches(len(rows), 256):
            x, _, L = self.take(None, model.dtype, rows[b0:b1])
            out[(slice(None),) * self._n_axis + (slice(b0, b1),)] = model.predict(x, L)
        return out

    @_time_major
    def metrics(self, model, rows=None):
        """The loss (and accuracy, or RMSE and MAE) over `rows` (default: the validation rows;
        none there, as in Model.fit without validation: no metrics)."""
        rows = self.val_rows if rows is None else rows
        if not len(rows):
            return {}
        total = correct = count = 0.0
        for b0, b1 in _batches(len(rows), 256):
            x, y, L = self.take(None, model.dtype, rows[b0:b1])
            r = model.evaluate(x, y, L)
            n = (b1 - b0) if self.output == "last" else (x.shape[0] * (b1 - b0) if L is None else int(L.sum()))
            total += r["loss"] * n                          # each batch's mean, weighted by the targets it had
            correct += r.get("accuracy", 0.0) * n
            count += n
        m = {"val_loss": total / count}
        if self.classes:
            m.update(val_accuracy=correct / count, majority=self.majority)
        else:
            pred, true = self._counted(rows, self.predict(model, rows)), self._counted(rows)
            m.update(val_rmse=_rmse(pred, true), val_mae=_mae(pred, true),
                     mean_rmse=_rmse(np.broadcast_to(self.train_mean, true.shape), true))
        return m

    def spec(self):
        return dict(kind=self.kind, path=os.path.abspath(self.path), fingerprint=self.fingerprint,
                    settings=dict(layout=self.layout, val_fraction=self.val_fraction, seed=self.seed,
                                  output=self.output),
                    settings_out=self.output_size, classes=self.classes)


def _floats(x):
    """x as a C-contiguous float32 or float64 array, a copy only where it must be."""
    return np.ascontiguousarray(x, x.dtype if x.dtype in (np.float32, np.float64) else np.float64)


def _cat(a, b, axis):
    return np.concatenate([a, b], axis=axis)


def _full(lengths, N, T):
    return np.full(N, T, np.int64) if lengths is None else lengths


def _within(T, L):
    """(T, N) bool: step t lies within row n's length L[n]."""
    return np.arange(T)[:, None] < L[None, :]


NPZ_HOLDS = "an .npz holds x, y and optionally lengths"


def _read_npz(path, need_y=True):
    try:
        with open(path, "rb") as f:                       # np.load takes a .npy or a pickle too
            head = f.read(6)
        if head == b"\x93NUMPY":
            raise DataError(f"{path}: a .npy file holds one array; arrays come as an .npz of x and y "
                            f"(np.savez(path, x=x, y=y))")
        if not head.startswith(ZIP):
            raise DataError(f"{path}: not an .npz file (a zip archive of arrays, as np.savez writes)")
        # np.load(path) leaves the file it opened open when the zip is damaged; ours closes
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            names = list(z.files)
            for need in ("x", "y") if need_y else ("x",):
                if need not in names:
                    raise DataError(f"{path}: no array {need!r} (the file holds: {', '.join(names) or 'nothing'})")
            # other arrays (a mean and scale kept beside the data, say) are left unread with a note; a
            # near miss of `lengths` is refused: read as absent, the run would train on the padding
            unread = [name for name in names if name not in ("x", "y", "lengths")]
            if "lengths" not in names:
                for name in unread:
                    if difflib.get_close_matches(name, ("lengths",), n=1, cutoff=0.6):
                        raise DataError(f"{path}: an array {name!r} and no 'lengths': did you mean 'lengths'? "
                                        f"({NPZ_HOLDS}; rename it, or drop it)")
            arrays = []
            for name in ("x", "y", "lengths"):
                try:
                    arrays.append(z[name] if name in names else None)
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    # np.savez keeps a list of sequences of different lengths as an object array
                    fix = ("pad the sequences to one length T and give their lengths as 'lengths'" if name == "x"
                           else "save it as a numeric array")
                    raise DataError(f"{path}: array {name!r} holds Python objects (np.savez saves a list of "
                                    f"arrays of different shapes so), which fastlstm does not unpickle: {fix}") from None
            return tuple(arrays), unread
    except DataError:
        raise
    except Exception as e:          # a hostile archive fails in zipfile, zlib, NumPy's header parser (tokenize)...
        raise DataError(f"{path}: not a readable .npz of arrays ({type(e).__name__}: {e})") from None


KINDS = dict(zip(choices.DATA_KINDS, (Text, Series, Arrays)))


def check_spec(spec, model=None):
    """A checkpoint's record of its data (a dataset's spec()), checked field by field before
    anything reads it, and against the model saved with it where given: a vocabulary of the
    model's inputs and outputs, a standardisation of its columns. Returns it with the
    settings that an older checkpoint lacks at their defaults; TypeError or ValueError
    naming the field (not DataError, which would blame the data file)."""
    if not isinstance(spec, dict):
        raise TypeError(f"it must be an object, got {type(spec).__name__}")
    if not isinstance(spec.get("settings"), dict):
        raise TypeError("it has no settings" if "settings" not in spec else
                        f"its settings must be an object, got {str(spec['settings'])[:80]}")
    kind = v.choice("kind", spec.get("kind"), tuple(KINDS))
    required, optional = SPEC_SETTINGS[kind]
    v.unknown("settings", spec["settings"], required + tuple(optional))
    st = dict(optional, **spec["settings"])               # what a checkpoint of 2026-12-03 lacks: the defaults
    missing = [k for k in required if k not in st]
    if missing:
        raise ValueError(f"settings lack {missing}")
    _require("path", spec.get("path"), isinstance(spec.get("path"), str), "a path")
    fp = spec.get("fingerprint")
    _require("fingerprint", fp, isinstance(fp, list) and len(fp) == 2 and all(map(v.is_count, fp)), "[size, CRC-32]")
    fraction = st.get("val_fraction")
    _require("val_fraction", fraction, _is_number(fraction) and 0 < fraction < 1, "in (0, 1)")
    if kind == "text":
        _require("T", st.get("T"), v.is_count(st.get("T"), v.MAX_ROW) and st["T"] >= 1, "in 1..2^62")
        vocab = spec.get("vocab")
        _require("vocab", vocab, isinstance(vocab, list) and len(vocab) >= 2 and vocab[0] == "" and all(
            isinstance(c, str) and len(c) == 1 for c in vocab[1:]) and all(map(str.__lt__, vocab[1:], vocab[2:])),
            '"" and the characters in order')
        implies = ("xent", "every", len(vocab), len(vocab))
    elif kind == "series":
        for k in ("target", "features"):
            names = st.get(k)
            _require(k, names, isinstance(names, list) and names and all(isinstance(n, str) and n for n in names),
                     "a list of column names")
        for k in ("window", "horizon", "season"):
            _require(k, st.get(k), v.is_count(st.get(k), v.MAX_ROW) and st[k] >= 1 or k == "season" and st[k] is None,
                     "in 1..2^62")
        _require("fill", st.get("fill"), st.get("fill") in (None, "ffill", "zero"), "ffill, zero or null")
        _separators("," if st["sep"] is None else st["sep"], st["decimal"])     # None: by the file's name
        n = len(_standardised(st["features"], st["target"])[0])
        for k in ("mean", "std"):
            a = spec.get(k)
            _require(k, a, isinstance(a, list) and len(a) == n and all(
                _is_number(x) and v.finite(x) is not None and (k == "mean" or x > 0) for x in a),
                f"{n} finite numbers" + (" > 0" if k == "std" else ""))
        _require("time_col", spec.get("time_col"), spec.get("time_col") is None or isinstance(spec["time_col"], str),
                 "a column's name or null")
        implies = ("mse", "last", len(st["features"]), st["horizon"] * len(st["target"]))
    else:
        v.choice("layout", st.get("layout"), ("batch", "time"))
        v.choice("output", st.get("output"), choices.OUTPUTS)
        _require("seed", st.get("seed"), v.is_count(st.get("seed")), "an integer >= 0")
        _require("classes", spec.get("classes"), isinstance(spec.get("classes"), bool), "true or false")
        out = spec.get("settings_out")
        _require("settings_out", out, v.is_count(out), "an integer >= 0")
        implies = ("xent" if spec["classes"] else "mse", st["output"], None, out)      # x's width: the file's
    if model is None:
        return dict(spec, settings=st)
    m = (model.loss, model.output, model.vocab_size or model.core.input_size, model.output_size)
    implies = tuple(got if want is None else want for want, got in zip(implies, m))     # None: any
    if m != implies:
        raise ValueError(f"it describes {kind} data for a model of loss {implies[0]}, output {implies[1]!r}, "
                         f"{implies[2]} inputs and {implies[3]} outputs, and the model has {m[0]}, {m[1]!r}, "
                         f"{m[2]} and {m[3]}")
    return dict(spec, settings=st)


def _require(name, value, ok, want):
    if not ok:
        raise ValueError(f"{name} must be {want}, got {str(value)[:80]}")


# A data set's settings in a checkpoint: (those every checkpoint has, {those added since: their default})
SPEC_SETTINGS = dict(text=(("T", "val_fraction"), {}),
                     series=(("target", "features", "window", "horizon", "val_fraction", "season", "fill"),
                             dict(sep=None, decimal=".")),
                     arrays=(("layout", "val_fraction", "seed"), dict(output="last")))


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)
