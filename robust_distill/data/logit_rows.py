"""Precomputed teacher logits on disk, read row by row: nothing is held whole in memory.

``write_rows`` streams arrays of rows (the precompute's chunks, one at a time) into one ``.npy``
file; ``LogitRows`` reads the rows a batch needs from it with positional reads (``os.pread``),
so that a host's resident memory holds one batch of logits, whatever the size of the split. The
file is a plain ``.npy`` (``np.load(path, mmap_mode='r')`` opens it too).
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


class LogitRows:
  """Read-only rows of a ``.npy`` file written by ``write_rows``: ``rows[idx]`` (an integer array)
  reads those rows only and returns ``[len(idx), ...]``, divided by ``divisor``. Has ``shape``,
  ``ndim``, ``dtype`` and ``len``; ``np.asarray(rows)`` reads everything (small splits, tests).
  Picklable: each process opens the file on first use."""

  def __init__(self, path: str, divisor: float = 1.0):
    self.path, self.divisor = path, divisor
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
        version, np.lib.format.read_array_header_2_0
      )
      shape, fortran, dtype = read(f)
      self.offset = f.tell()
    if fortran:
      raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self.row_shape = self.shape[1:]
    self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
    expected = self.offset + self.shape[0] * self.row_bytes
    if os.path.getsize(path) != expected:
      raise ValueError(f"{path} holds {os.path.getsize(path)} bytes, expected {expected}")
    self._fd = None

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def divided_by(self, divisor: float) -> "LogitRows":
    """The same rows, divided by ``divisor`` as they are read (a teacher temperature)."""
    return LogitRows(self.path, self.divisor * divisor)

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
    out = np.frombuffer(buf, self.dtype).reshape((len(idx),) + self.row_shape)
    return out / self.divisor if self.divisor != 1.0 else out

  def __array__(self, dtype=None, copy=None):
    a = self[np.arange(self.shape[0])]
    return a if dtype is None else a.astype(dtype)

  def __del__(self):
    if getattr(self, "_fd", None) is not None:
      os.close(self._fd)
