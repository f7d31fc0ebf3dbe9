"""Training batches built by worker processes (grain's ``mp_prefetch``), with the in-process
iterator's state format."""

import dataclasses
from typing import Any

from absl import flags
import grain
import numpy as np


class WorkerIterator:
  """Batches ``start, start + 1, ...`` of ``ds`` built by ``workers`` processes, in order; its
  state is the number of the next batch, as the in-process iterator's."""

  def __init__(self, ds, workers: int, start: int):
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (a library user may not)
      flags.FLAGS.mark_as_parsed()
    self.next_index = int(start)
    opts = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
    rest = ds[self.next_index :]
    self._it = rest.to_iter_dataset(grain.ReadOptions(num_threads=1)).mp_prefetch(opts).__iter__()

  def __iter__(self):
    return self

  def __next__(self):
    out = next(self._it)
    self.next_index += 1
    return out

  def get_state(self) -> dict:
    return {"next_index": self.next_index}


@dataclasses.dataclass(frozen=True)
class HostBatch:
  """(batch number, global-batch positions) -> this host's batch (picklable, for workers)."""

  gather: Any  # pipeline._Gather
  host: slice

  def __call__(self, i, idx):
    return self.gather(i, np.asarray(idx), self.host)
