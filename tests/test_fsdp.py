"""The 2-D ``(data, fsdp)`` mesh: placement rule, bytes per device, a sharded train step equal to
the 1-device step, and a whole run (checkpoints, resumption, evaluation) on a 4 x 2 mesh."""

import os

import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from robust_distill import config as C, models, parallel
from robust_distill.train import loop, optim, step as step_lib

from conftest import ROOT, smoke_config


def test_fsdp_spec_splits_large_arrays_along_their_largest_divisible_dimension():
  assert parallel.fsdp_spec((512, 128), 2) == P("fsdp")
  assert parallel.fsdp_spec((3, 3, 64, 256), 4) == P(None, None, None, "fsdp")
  assert parallel.fsdp_spec((3, 3, 128, 128), 2) == P(None, None, "fsdp")  # first of equals
  assert parallel.fsdp_spec((3, 3, 3, 7001), 2) == P()  # no dimension that 2 divides
  assert parallel.fsdp_spec((3, 3, 4, 7001), 2) == P(None, None, "fsdp")
  assert parallel.fsdp_spec((128,), 2) == P()  # too small: replicated
  assert parallel.fsdp_spec((512, 128), 1) == P()
  tree = {"w": jax.ShapeDtypeStruct((512, 128), np.float32), "b": np.zeros(128, np.float32)}
  assert parallel.bytes_per_device(tree, 1) == 512 * 128 * 4 + 128 * 4
  assert parallel.bytes_per_device(tree, 4) == 512 * 128 * 4 // 4 + 128 * 4


def test_mesh_shapes_and_bad_fsdp():
  assert parallel.make_mesh(8).axis_names == ("data",)
  m = parallel.make_mesh(8, fsdp=2)
  assert dict(m.shape) == {"data": 4, "fsdp": 2}
  assert parallel.batch_sharding(m).spec == P(("data", "fsdp"))
  with pytest.raises(ValueError, match="fsdp=3"):
    parallel.make_mesh(8, fsdp=3)
  with pytest.raises(ValueError, match="fsdp=0"):
    C.validate(smoke_config(fsdp=0))


def _run(mesh, batch, steps=2):
  s = C.stage(
    loss=dict(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=0.5),
    attack_cfg=C.attack(eps=0.1, step_size=0.03, steps=2, objective="kl_self"),
  )
  tx = optim.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(models.build("small_cnn", width=16, hidden=128), tx)
  sh = parallel.state_sharding(state, mesh)
  fn = jax.jit(
    step_lib.make_train_step(s, graphdef, tx),
    donate_argnums=(0,),
    out_shardings=(sh, parallel.replicated(mesh)),
  )
  state = parallel.place_state(state, mesh)
  gb = parallel.shard_batch(batch, mesh)
  for _ in range(steps):
    state, metrics = fn(state, gb, jax.random.key(0), None)
  return state, jax.device_get(metrics)


def test_a_4x2_fsdp_step_equals_the_one_device_step():
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.integers(0, 255, (32, 28, 28, 1), dtype=np.uint8),
    "label": rng.integers(0, 10, 32).astype(np.int32),
    "teacher_logits": rng.normal(size=(32, 10)).astype(np.float32),
  }
  s2, m2 = _run(parallel.make_mesh(8, fsdp=2), batch)
  s1, m1 = _run(parallel.make_mesh(1), batch)
  # The big kernels really are split over fsdp (half of each on a device).
  fc1 = s2["params"]["fc1"]["kernel"]
  assert "fsdp" in str(fc1.sharding.spec)
  assert fc1.addressable_shards[0].data.size == fc1.size // 2
  momenta = [a for a in jax.tree.leaves(s2["opt"]) if a.shape == fc1.shape]
  assert momenta and all("fsdp" in str(a.sharding.spec) for a in momenta)  # optimizer state too
  for a, b in zip(jax.tree.leaves(jax.device_get(s2)), jax.tree.leaves(jax.device_get(s1))):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)


def test_a_whole_run_on_a_4x2_mesh_checkpoints_resumes_and_evaluates(tmp_path):
  c = C.load(os.path.join(ROOT, "configs", "pgd_at.py:smoke"))  # student and eval stages only
  c.fsdp = 2
  c.student.model_kwargs = dict(width=16, hidden=128)  # fc1, fc2 large enough to split
  c.eval.autoattack = ""
  res = loop.run(c, str(tmp_path))
  assert 0.0 <= res["pgd_acc"] <= res["clean_acc"] <= 1.0
  # A second run finds every stage done and returns the same evaluation.
  again = loop.run(c, str(tmp_path))
  assert again["clean_acc"] == res["clean_acc"]
  m = __import__("robust_distill").restore(str(tmp_path))
  assert np.asarray(m(np.zeros((2, 28, 28, 1), np.float32))).shape == (2, 10)
