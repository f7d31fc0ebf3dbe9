"""Precomputed teacher logits on disk, read row by row: nothing is held whole in memory.

``write_rows`` streams arrays of rows (the precompute's chunks, one at a time) into one ``.npy``
file; ``LogitRows`` reads the rows a batch needs from it with positional reads (``os.pread``),
so that a host's resident memory holds one batch of logits, whatever the size of the split. The
file is a plain ``.npy`` (``np.load(path, mmap_mode='r')`` opens it too).

Rows are float32 logits, or, for replayed views (many rows per example), compact and relative
to each row's largest logit (softmax-invariant): float16 logits of all classes, or the top k
(``encode_topk``: float16 values, int16/int32 class indices and one float32 ``rest``, the value
every other logit takes so that their total softmax mass at temperature 1 is kept).
``LogitRows`` returns float32 logits of every class either way.
"""

import os

import numpy as np


def write_rows(path: str, parts, *, n: int) -> None:
  """Writes ``n`` rows from the iterable ``parts`` (arrays ``[k, ...]`` of one shape and dtype
  after the first axis) to the ``.npy`` file ``path``, atomically (a temporary file renamed)."""
  tmp = path + ".tmp"
  written, header = 0, None
  with open(tmp, "wb") as f:
    for a in parts:
      a = np.ascontiguousarray(a)
      if header is None:
        header = {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False,
                  "shape": (n,) + a.shape[1:]}  # fmt: skip
        np.lib.format.write_array_header_1_0(f, header)
      elif a.shape[1:] != header["shape"][1:] or a.dtype.str != np.dtype(header["descr"]).str:
        raise ValueError(f"rows of shape {a.shape[1:]} {a.dtype} after {header}")
      f.write(a.tobytes())
      written += len(a)
    if written != n or header is None:
      raise ValueError(f"wrote {written} rows, expected {n}")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def encode_topk(z: np.ndarray, k: int) -> np.ndarray:
  """Compact rows of logits ``z`` [n, C]: float16 of all classes if ``k`` is 0 or >= C; else a
  structured array with the top-``k`` ``values`` (float16) and ``index`` (their classes) and
  ``rest`` = logsumexp(other logits) - log(C - k), the value each other logit is rebuilt to.

  Each row is stored relative to its largest logit (clipped below at float16's smallest
  value), which leaves every softmax of it, at any temperature, unchanged and keeps it within
  float16's range."""
  n, c = z.shape
  z = np.maximum(z - z.max(1, keepdims=True), np.finfo(np.float16).min).astype(np.float32)
  if k <= 0 or k >= c:
    return z.astype(np.float16)
  index = np.argsort(-z, axis=1, kind="stable")[:, :k]
  values = np.take_along_axis(z, index, 1)
  others = z.copy()
  np.put_along_axis(others, index, -np.inf, 1)
  m = others.max(1, keepdims=True)
  lse = (m + np.log(np.exp(others - m).sum(1, keepdims=True)))[:, 0]
  rows = np.empty(n, topk_dtype(k, c))
  rows["values"], rows["index"], rows["rest"] = values, index, lse - np.log(c - k)
  return rows


def topk_dtype(k: int, classes: int) -> np.dtype:
  """The row of ``encode_topk``: k float16 values, k class indices, one float32 rest."""
  ix = "<i2" if classes <= np.iinfo(np.int16).max else "<i4"
  return np.dtype([("values", "<f2", (k,)), ("index", ix, (k,)), ("rest", "<f4")])


def decode(rows: np.ndarray, classes: int | None) -> np.ndarray:
  """float32 logits [n, C] (or [n, 2, C]) of rows stored by ``encode_topk`` or as float32."""
  if rows.dtype.names is None:
    return rows if rows.dtype == np.float32 else rows.astype(np.float32)
  if classes is None:
    raise ValueError("top-k teacher logits need the number of classes to be rebuilt")
  out = np.repeat(rows["rest"][:, None], classes, axis=1).astype(np.float32)
  np.put_along_axis(out, rows["index"].astype(np.int64), rows["values"].astype(np.float32), 1)
  return out


class LogitRows:
  """Read-only rows of a ``.npy`` file written by ``write_rows``: ``rows[idx]`` (an integer array)
  reads those rows only and returns them as float32 logits ``[len(idx), ...]``. Has ``shape``,
  ``ndim``, ``dtype`` and ``len``; ``np.asarray(rows)`` reads everything (small splits, tests).
  Picklable: each process opens the file on first use."""

  def __init__(self, path: str, classes: int | None = None):
    self.path, self.classes = path, classes
    header = np.load(path, mmap_mode="r")  # maps the file: reads the header, no rows
    if np.isfortran(header):
      raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
    self.shape, self.dtype, self.offset = tuple(header.shape), header.dtype, int(header.offset)
    del header
    self.row_shape = self.shape[1:]
    self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
    expected = self.offset + self.shape[0] * self.row_bytes
    if os.path.getsize(path) != expected:
      raise ValueError(f"{path} holds {os.path.getsize(path)} bytes, expected {expected}")
    self._fd = None

  @property
  def ndim(self) -> int:
    """Dimensions of the float32 logits it returns (a top-k row stands for C logits)."""
    return len(self.shape) + (1 if self.dtype.names else 0)

  def __len__(self) -> int:
    return self.shape[0]

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_fd"} | {"_fd": None}

  def __getitem__(self, idx) -> np.ndarray:
    idx = np.asarray(idx, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
      raise IndexError(f"rows {idx.min()}..{idx.max()} outside [0, {self.shape[0]})")
    if self._fd is None:
      self._fd = os.open(self.path, os.O_RDONLY)
    buf = bytearray(len(idx) * self.row_bytes)
    view = memoryview(buf)
    for j, r in enumerate(idx.tolist()):
      got = os.preadv(self._fd, [view[j * self.row_bytes : (j + 1) * self.row_bytes]],
                      self.offset + r * self.row_bytes)  # fmt: skip
      if got != self.row_bytes:
        raise OSError(f"{self.path}: short read of row {r}")
    return decode(
      np.frombuffer(buf, self.dtype).reshape((len(idx),) + self.row_shape), self.classes
    )

  def __array__(self, dtype=None, copy=None):
    a = self[np.arange(self.shape[0])]
    return a if dtype is None else a.astype(dtype)

  def __del__(self):
    if getattr(self, "_fd", None) is not None:
      os.close(self._fd)
