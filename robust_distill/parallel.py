"""Device mesh and shardings: ``jax.jit`` + ``NamedSharding`` on a ``data`` or ``(data, fsdp)``
mesh.

With ``fsdp`` = 1 (the default) the mesh is 1-D: the batch is sharded over ``data`` and the
parameters and optimizer state are replicated. With ``fsdp`` = F > 1 it is 2-D, ``(N / F, F)``:
the batch is sharded over both axes, and every large parameter (and its optimizer state) is
split over ``fsdp`` along its largest dimension that F divides (``state_sharding``); XLA gathers
each one where it is used. The same code runs on 1..N devices of one host and on several hosts
(each host feeds its local slice of the global batch through
``jax.make_array_from_process_local_data``).
"""

import math

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


# Parameters smaller than this (biases, norm scales, small kernels) stay replicated under fsdp:
# gathering them would cost more than it saves.
FSDP_MIN_SIZE = 2**14


def make_mesh(num_devices: int = -1, devices=None, *, fsdp: int = 1) -> Mesh:
  """A mesh over ``num_devices`` devices (-1: all): 1-D ``("data",)`` when ``fsdp`` is 1, else
  2-D ``("data", "fsdp")`` of shape ``(num_devices / fsdp, fsdp)``; devices keep their order,
  so one host's devices stay together along ``data``.

  Uses ``AxisType.Auto`` so that replicated or fsdp-sharded parameters and a sharded batch mix
  without explicit sharding annotations inside the model.
  """
  devices = list(devices if devices is not None else jax.devices())
  if num_devices > 0:
    if num_devices > len(devices):
      raise ValueError(f"asked for {num_devices} devices, only {len(devices)} available")
    devices = devices[:num_devices]
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices of the mesh")
  if fsdp == 1:
    return Mesh(np.array(devices), ("data",), axis_types=(AxisType.Auto,))
  grid = np.array(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def pad_multiple(mesh: Mesh) -> int:
  """What an evaluation pads a partial batch up to a multiple of: the device count. Padding rows
  come last and every random draw of the attacks has the batch as its leading axis, which with
  JAX's partitionable threefry (the default) gives each row the same draws whatever the number
  of rows after it, so a point is attacked alike on any number of devices. With the older
  threefry, a multiple of 8 (and of the device count) keeps 1 to 8 devices alike."""
  n = mesh.devices.size
  return n if jax.config.jax_threefry_partitionable else math.lcm(8, n)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The batch's leading dimension over every axis of ``mesh``."""
  axes = mesh.axis_names
  return NamedSharding(mesh, P(axes[0] if len(axes) == 1 else tuple(axes)))


def fsdp_spec(shape, fsdp: int, min_size: int = FSDP_MIN_SIZE) -> P:
  """Where an array of ``shape`` goes on a mesh with an ``fsdp`` axis of size ``fsdp``: split
  along its largest dimension that ``fsdp`` divides (the first of equals), or replicated if it
  has fewer than ``min_size`` elements or no such dimension."""
  if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  fits = [(d, -i) for i, d in enumerate(shape) if d % fsdp == 0]
  if not fits:
    return P()
  axis = -max(fits)[1]
  return P(*([None] * axis + ["fsdp"]))


def state_sharding(tree, mesh: Mesh):
  """A pytree of shardings for ``tree`` (parameters, optimizer state, BatchNorm statistics):
  replicated on a 1-D mesh; on a ``(data, fsdp)`` mesh, each array as ``fsdp_spec`` says."""
  size = dict(mesh.shape).get("fsdp", 1)
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(np.shape(a), size)), tree)


def bytes_per_device(tree, fsdp: int) -> int:
  """Bytes of ``tree`` (arrays or ShapeDtypeStructs) that one device holds when placed by
  ``state_sharding`` on a mesh whose ``fsdp`` axis has size ``fsdp``."""
  total = 0
  for a in jax.tree.leaves(tree):
    n = int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
    total += n // fsdp if fsdp_spec(a.shape, fsdp) != P() else n
  return total


def replicate(tree, mesh: Mesh):
  """Puts a pytree on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh), may_alias=False)


def place_state(tree, mesh: Mesh):
  """Puts parameters / optimizer state on ``mesh`` as ``state_sharding`` says."""
  return jax.device_put(tree, state_sharding(tree, mesh), may_alias=False)


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
