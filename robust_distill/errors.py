"""The errors an entry point reports as one line (``error: ...``) instead of a traceback: bad
input, missing or unreadable files, a failed write, a diverged run. Anything else is a bug and
keeps its traceback."""

from robust_distill.train.checkpoint import CheckpointCorruptError, CheckpointWriteError
from robust_distill.train.interrupt import NonFiniteLossError

EXPECTED = (
  ValueError,
  KeyError,
  OSError,  # FileNotFoundError, FileExistsError, PermissionError, a full disk, ...
  NonFiniteLossError,
  CheckpointCorruptError,
  CheckpointWriteError,
)


def one_line(e: BaseException) -> str:
  """The message of ``e`` on one line (an OSError without text gets its type and path)."""
  text = str(e).strip()
  if isinstance(e, OSError) and e.strerror:
    text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
  text = text or type(e).__name__
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if any(line.startswith("Traceback (most recent call last)") for line in lines):
    head = lines[0].split("Traceback")[0].strip()  # e.g. absl's "flag --config=...: ..."
    lines = [head, lines[-1]] if head else lines[-1:]  # the error the traceback ends with
  return " ".join(lines)


# What loading a config file or applying a --config.x=y override can raise.
CONFIG_LOADING = (SyntaxError, ImportError, AttributeError, TypeError, NameError) + EXPECTED
