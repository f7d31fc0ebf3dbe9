"""AutoAttack evaluation of a trained checkpoint, sharded over the mesh and resumable.

``evaluate(workdir, ...)`` loads the best checkpoint of the student (or the teacher), runs the
attacks (``standard``: APGD-CE, APGD-T, FAB-T, Square; ``rand``; or a comma-separated list) in
order, each on the points still robust, and writes ``eval_autoattack.json`` (robust accuracy,
which attack broke how many points, times, honesty checks, command, git commit). The CLI is
``python -m robust_distill.eval``; the training pipeline's eval stage calls the same function.

Scale and resumption: between attacks the surviving points are packed into equal global
batches of at most ``batch_size`` (padded up to a multiple of the device count with a validity
mask, so one compiled program serves every batch of an attack; padding changes no real point's
random draws), each batch
is sharded over the ``data`` axis of the mesh, and after every batch the per-point results
(clean or not, which attack broke it, which points each attack has seen) are saved to
``WORKDIR/autoattack/state_<settings>.npz``. A killed evaluation restarts where it stopped and
gives the same final numbers: batch composition and random keys depend only on the settings and
the saved results.
"""

import hashlib
import json
import os
import time

import jax

from robust_distill import files, parallel, workdir as workdir_lib
from robust_distill.attacks import autoattack as aa
from robust_distill.eval import honesty, report
from robust_distill.eval.protocol import Runner, Stopped, run_protocol
from robust_distill.metrics import fmt_time
from robust_distill.models import make_apply


__all__ = ["Runner", "Stopped", "evaluate", "run_protocol"]


# Options that change how the loops run, not what they compute: a resumed evaluation with a
# different chunk size or driver continues the same state file.
_EXECUTION_OPTS = ("chunk", "driver", "unroll")


def default_batch_size(ndev: int) -> int:
  """256 points per attack batch, rounded up to whole multiples of 32 per device: per image the
  attacks run about as fast from 128 to 256 points on 2 to 8 host devices
  (``bench/attack_sweep.py``), and the same 256 whatever the device count up to 8 keeps the
  batches, hence the random draws, of an evaluation alike across machines."""
  per = 32 * ndev
  return per * -(-256 // per)


def _settings_key(s: dict) -> str:
  s = {**s, "opts": {k: v for k, v in s["opts"].items() if k not in _EXECUTION_OPTS}}
  return hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


def _summary(st, names, n) -> dict:
  clean = st["clean"] == 1
  robust = clean & (st["broken_by"] < 0)
  per_attack = []
  for k, name in enumerate(names, start=1):
    after = int((clean & ((st["broken_by"] < 0) | (st["broken_by"] > k))).sum())
    per_attack.append(
      {
        "attack": name,
        "broken": int((st["broken_by"] == k).sum()),
        "robust_after": after / n,
        "seconds": float(st["seconds"][k]),
      }
    )
  return {
    "clean_acc": float(clean.mean()),
    "robust_acc": float(robust.mean()),
    "per_attack": per_attack,
  }


def evaluate(
  workdir: str,
  *,
  stage: str = "",
  which: str = "best",
  attacks: str = "standard",
  eps: float = -1.0,
  norm: str = "",
  start: int = 0,
  n: int = 0,
  batch_size: int = 0,
  seed: int = 0,
  checks: bool = True,
  check_n: int = 256,
  out: str = "",
  fresh: bool = False,
  opts: dict | None = None,
  stop_after_batches: int = 0,
  devices: int = -1,
  log=print,
) -> dict:
  """Runs the AutoAttack evaluation of a checkpoint on test points ``start .. start + n``
  (``n`` = 0: to the end); returns the result dict that is also written to ``out``."""
  for key, value, low in (("n", n, 0), ("start", start, 0), ("batch_size", batch_size, 0),
                          ("check_n", check_n, 0), ("seed", seed, 0)):  # fmt: skip
    if value < low:
      raise ValueError(f"--{key}={value}: must be >= {low}")
  if eps < 0 and eps != -1.0:
    raise ValueError(f"--eps={eps}: must be >= 0 (or -1: the run's evaluation eps)")
  if stage not in ("", "student", "teacher"):
    raise ValueError(f"--stage={stage!r}: valid: 'student', 'teacher'")
  names = aa.resolve(attacks)
  o = aa.options(attacks if attacks in aa.VERSIONS else "standard", **(opts or {}))
  if o["eot_iter"] > 1:
    raise ValueError(
      "eot_iter > 1 (version 'rand') needs a randomized model; the models of "
      "this library are deterministic in eval mode: use --attacks=standard"
    )
  stage = stage or workdir_lib.default_stage(workdir)
  config = workdir_lib.read_config(workdir_lib.stage_dir(workdir, stage))
  stage_cfg = config[stage]
  eps = eps if eps >= 0 else (config.eval.eps if config.eval.eps >= 0 else stage_cfg.attack.eps)
  norm = norm or stage_cfg.attack.norm
  if norm not in ("linf", "l2"):
    raise ValueError(f"norm must be linf or l2, got {norm!r}")
  if norm == "linf" and eps > 1:
    raise ValueError(f"--eps={eps}: an L-inf radius on images in [0, 1] must be <= 1")
  out = out or os.path.join(workdir, "eval_autoattack.json")
  state_dir = os.path.join(os.path.dirname(os.path.abspath(out)), "autoattack")
  files.check_writable(state_dir)  # before any compute: the results must have a place
  mesh = parallel.make_mesh(devices)
  ndev = mesh.devices.size
  batch_size = batch_size or default_batch_size(ndev)
  if batch_size % ndev:
    raise ValueError(f"batch size {batch_size} not divisible by {ndev} devices")
  test = workdir_lib.test_split(config, start, n)  # the evaluated points, in memory
  n = len(test["label"])
  model = workdir_lib.load_stage_model(config, stage, workdir, mesh, which=which)
  apply = make_apply(model.graphdef, stage_cfg.temperature)
  runner = Runner(apply, eps=eps, norm=norm, opts=o, mesh=mesh)
  settings = dict(
    stage=stage,
    which=which,
    step=int(model.step),
    attacks=list(names),
    eps=eps,
    norm=norm,
    n=n,
    batch_size=batch_size,
    seed=seed,
    opts=o,
  )
  if start:
    settings["start"] = start
  st = run_protocol(
    runner,
    model.params,
    model.stats,
    test["image"],
    test["label"],
    names=names,
    batch_size=batch_size,
    seed=seed,
    state_path=os.path.join(state_dir, f"state_{_settings_key(settings)}.npz"),
    settings=settings,
    fresh=fresh,
    stop_after_batches=stop_after_batches,
    log=log,
  )
  t_start = time.perf_counter()
  result = {
    **_summary(st, names, n),
    "n": n,
    "start": start,
    "eps": eps,
    "norm": norm,
    "attacks": list(names),
    "version": attacks,
    "options": o,
    "stage": stage,
    "which": which,
    "step": int(model.step),
    "model": stage_cfg.model,
    "temperature": float(stage_cfg.temperature),
    "dataset": config.dataset,
    "batch_size": batch_size,
    "devices": ndev,
    "processes": jax.process_count(),
    "platform": jax.devices()[0].platform,
    "seconds": float(st["seconds"].sum()),
    "seed": seed,
    "max_perturbation": float(st["max_dist"]),
    "recheck_disagreements": int(st["recheck_fail"]),
    "command": workdir_lib.command_line(),
    "git_commit": workdir_lib.git_commit(),
  }
  checks = checks and check_n > 0
  if checks and jax.process_count() > 1:
    log("[autoattack] honesty checks skipped in a multi-process run; rerun them on one host")
    checks = False
  if checks:
    deployed = workdir_lib.as_restored(jax.device_get(model), config, stage, workdir)
    result.update(
      honesty.run_checks(
        runner,
        model.params,
        model.stats,
        test,
        st,
        result,
        deployed=deployed,
        workdir=workdir,
        check_n=check_n,
        seed=seed,
      )
    )
  report.write_json(out, result)
  log(report.autoattack_table(result))
  log(f"[autoattack] wrote {out} ({fmt_time(time.perf_counter() - t_start)} this run)")
  return result
