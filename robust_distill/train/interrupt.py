"""How a training stage stops early: a signal turned into a checkpoint-then-exit flag, a
``stop_at_step`` interruption, and a non-finite loss."""

import signal

import jax


def log(msg: str) -> None:
  """Prints from the main process only."""
  if jax.process_index() == 0:
    print(msg, flush=True)


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or Inf; the last good checkpoint is left untouched."""


class Stop:
  """Turns SIGTERM/SIGINT into a flag so the loop can save a checkpoint before exiting."""

  def __init__(self):
    self.requested = False
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not in the main thread
        pass
    return self

  def _handle(self, signum, _):
    if self.requested:  # second signal: give up immediately
      raise KeyboardInterrupt
    log(f"signal {signum}: saving a checkpoint and stopping after this step")
    self.requested = True

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class Interrupted(Exception):
  """Training stopped early (signal or ``stop_at_step``) after saving a checkpoint."""
