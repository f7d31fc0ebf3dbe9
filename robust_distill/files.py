"""Atomic file writes: a temporary file in the same folder, then a rename, so that a run killed
at any instant leaves either the old file or the new one, never half of one."""

import json
import os


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically, creating the folder."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj, *, indent: int | None = 1) -> None:
  """Writes ``obj`` as JSON to ``path`` atomically."""
  write_text(path, json.dumps(obj, indent=indent))


def check_writable(folder: str) -> None:
  """Creates ``folder`` if needed and checks that a file can be written in it; raises an
  ``OSError`` naming the folder otherwise (a file in its place, a read-only folder)."""
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise NotADirectoryError(f"the workdir {folder} is a file, not a folder")
  os.makedirs(folder, exist_ok=True)
  probe = os.path.join(folder, f".write_probe{os.getpid()}")
  try:
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"cannot write in the workdir {folder} ({e.strerror})") from e
