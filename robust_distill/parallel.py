"""Device mesh and shardings: ``jax.jit`` + ``NamedSharding`` on a 1-D ``data`` mesh.

The batch is sharded over ``data``; parameters and optimizer state are replicated. The same code
runs on 1..N devices of one host and on several hosts (each host feeds its local slice of the
global batch through ``jax.make_array_from_process_local_data``).
"""

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np


def initialize_distributed(
  enabled: bool, coordinator: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
  """Calls ``jax.distributed.initialize`` when ``enabled`` (arguments left empty are taken
  from the environment: TPU pods, SLURM, or JAX_COORDINATOR_ADDRESS etc.)."""
  if not enabled:
    return
  kw = {}
  if coordinator:
    kw["coordinator_address"] = coordinator
  if num_processes > 0:
    kw["num_processes"] = num_processes
  if process_id >= 0:
    kw["process_id"] = process_id
  jax.distributed.initialize(**kw)


def make_mesh(num_devices: int = -1, devices=None) -> Mesh:
  """A 1-D mesh with axis ``data`` over ``num_devices`` devices (-1: all).

  Uses ``AxisType.Auto`` so that replicated parameters and a sharded batch mix without explicit
  sharding annotations inside the model.
  """
  devices = list(devices if devices is not None else jax.devices())
  if num_devices > 0:
    if num_devices > len(devices):
      raise ValueError(f"asked for {num_devices} devices, only {len(devices)} available")
    devices = devices[:num_devices]
  return Mesh(np.array(devices), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicate(tree, mesh: Mesh):
  """Puts a pytree on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh), may_alias=False)


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """This process's share of a global batch; checks divisibility by the mesh size."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(
      f"global batch size {global_batch} is not divisible by the {n} devices "
      "of the mesh; change the batch size or --config.host_devices"
    )
  return global_batch // jax.process_count()


def host_rows(mesh: Mesh, global_batch: int) -> slice:
  """The rows of a global batch of ``global_batch`` that this process's devices hold: the rows
  this host must feed to ``jax.make_array_from_process_local_data`` (contiguous for a ``data``
  mesh whose devices are grouped by process, as ``make_mesh`` builds it)."""
  local_batch_size(global_batch, mesh)
  if jax.process_count() == 1:
    return slice(0, global_batch)
  spans = sorted(
    {
      (ix[0].start or 0, global_batch if ix[0].stop is None else ix[0].stop)
      for ix in batch_sharding(mesh).addressable_devices_indices_map((global_batch,)).values()
    }
  )
  lo, hi = spans[0]
  for a, b in spans[1:]:
    if a != hi:
      raise ValueError(
        f"process {jax.process_index()} holds non-contiguous rows {spans} of the "
        "global batch; build the mesh with devices grouped by process"
      )
    hi = b
  return slice(lo, hi)


# Batch entries that every host holds whole (the same on all hosts), replicated on the mesh.
REPLICATED_KEYS = ("pool_image",)


def shard_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global ``jax.Array`` batch sharded over ``data`` (entries named
  in ``REPLICATED_KEYS``, identical on every host, are replicated instead)."""
  sh, repl = batch_sharding(mesh), replicated(mesh)
  return {
    k: jax.make_array_from_process_local_data(repl if k in REPLICATED_KEYS else sh, np.asarray(v))
    for k, v in local.items()
  }
