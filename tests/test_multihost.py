"""Multi-host: 2 JAX processes x 2 CPU devices (gloo collectives over localhost) train, precompute
teacher logits and evaluate together, and end with the parameters of a 1-process, 4-device run;
the checkpoint they wrote collectively restores in a single process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import robust_distill

from conftest import ROOT, cli_env

# The quickstart pipeline (teacher -> precompute -> student -> eval) as a 3-step smoke run.
# The training attacks keep their random start but take no PGD step: a sign step turns the
# last-bit differences between gloo's all-reduce and one process's into different pixels, and
# from there into parameter differences of 1e-5 to 1e-3 within 3 steps, which would hide a real
# bug (a host feeding the wrong rows of the batch gives differences of about 5e-3 after one
# step). The random start still ties every row of the batch to its position. The evaluation
# runs its attacks in full on both hosts.
ARGS = [
  "-m",
  "robust_distill.main",
  "--config=configs/fmnist_ltd.py:smoke",
  "--config.steps=3",
  "--config.eval.autoattack=apgd-ce",
  "--config.teacher.attack.steps=0",
  "--config.student.attack.steps=0",
  "--config.checkpoint.every_steps=1",
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run(workdir, devices, extra=(), timeout=420):
  return subprocess.Popen(
    [sys.executable, *ARGS, f"--workdir={workdir}", f"--host_devices={devices}", *extra],
    cwd=ROOT,
    env=cli_env("JAX_PLATFORMS"),  # the entry point takes its device count from --host_devices
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _wait(procs, timeout=420):
  outs = []
  for p in procs:
    out, _ = p.communicate(timeout=timeout)
    outs.append(out)
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return outs


@pytest.mark.slow  # three processes, each compiling the whole pipeline: about 2 minutes
def test_two_processes_match_one_process_and_restore_in_one(tmp_path):
  port = _free_port()
  multi = str(tmp_path / "multi")
  dist = [
    "--config.distributed=True",
    f"--config.coordinator=localhost:{port}",
    "--config.num_processes=2",
  ]
  procs = [_run(multi, 2, dist + [f"--config.process_id={i}"]) for i in range(2)]
  single = str(tmp_path / "single")
  outs = _wait(procs)
  _wait([_run(single, 4)])
  assert "2 process(es)" in outs[0]
  # Each host wrote its own teacher-logit chunks; together they cover the training split.
  chunks = sorted(os.listdir(os.path.join(multi, "teacher_logits")))
  assert any(c.endswith("_p000.npz") for c in chunks) and any(
    c.endswith("_p001.npz") for c in chunks
  )
  # Parameters after 3 steps: the same as the 1-process, 4-device run up to the order of
  # floating-point sums (measured: at most 6e-8).
  for stage in ("teacher", "student"):
    a = robust_distill.restore(multi, which="latest", stage=stage)
    b = robust_distill.restore(single, which="latest", stage=stage)
    assert a.step == b.step == 3
    la, lb = jax.tree.leaves(a.module), jax.tree.leaves(b.module)
    for x, y in zip(la, lb):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  # The evaluation saw the same points and agrees.
  ra, rb = (json.load(open(os.path.join(w, "eval.json"))) for w in (multi, single))
  assert ra["n"] == rb["n"] and ra["clean_acc"] == rb["clean_acc"]
  # The collectively written checkpoint restores in this single process and runs.
  m = robust_distill.restore(multi)
  x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
  assert np.isfinite(np.asarray(m(x))).all()
