"""AutoAttack evaluation of a trained checkpoint, sharded over the mesh and resumable.

    python -m robust_distill.evaluate --workdir=DIR [--attacks=standard] [--eps=0.1] [--n=1000]

Loads the best checkpoint of the student (or ``--stage=teacher``) saved by training, runs the
attacks of ``--attacks`` (``standard``: APGD-CE, APGD-T, FAB-T, Square; ``rand``; or a
comma-separated list) in order, each on the points still robust, and writes
``DIR/eval_autoattack.json`` (robust accuracy, which attack broke how many points, times,
honesty checks, command, git commit) plus a plain-text table on stdout.

Scale and resumption: between attacks the surviving points are packed into fixed-size global
batches (padded, with a validity mask, so one compiled program serves every batch), each batch is
sharded over the ``data`` axis of the mesh (1..N devices, several hosts with
``--distributed``), and after every batch the per-point results (clean or not, which attack broke
it, which points each attack has seen) are saved to ``DIR/autoattack/<settings>.npz``. A killed
evaluation restarts where it stopped and gives the same final numbers: batch composition and
random keys depend only on the settings and the saved results.
"""

import functools
import hashlib
import json
import os
import sys
import time

from absl import app, flags, logging

from robust_distill import hostdevices

FLAGS = flags.FLAGS


def _define_flags():
  """The CLI flags (defined only when this module is the program, so that importing it from
  another absl program, such as the training CLI, does not clash with that program's flags)."""
  flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoint.")
  flags.DEFINE_string("stage", "", "Stage to evaluate: student (default when trained) or teacher.")
  flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint of the stage.")
  flags.DEFINE_string("attacks", "standard", "standard, rand, or a comma-separated list of "
                      "apgd-ce, apgd-dlr, apgd-t, fab-t, square.")
  flags.DEFINE_float("eps", -1.0, "Radius of the threat model (default: the config's eval eps).")
  flags.DEFINE_string("norm", "", "linf or l2 (default: the stage's attack norm).")
  flags.DEFINE_integer("n", 0, "Evaluate the first n test points (0: all).")
  flags.DEFINE_integer("batch_size", 0, "Global batch size (default: 32 x devices).")
  flags.DEFINE_integer("seed", 0, "Base seed of the attacks' random keys.")
  flags.DEFINE_integer("host_devices", hostdevices.DEFAULT_HOST_DEVICES, "CPU host devices.")
  flags.DEFINE_bool("checks", True, "Run the honesty checks.")
  flags.DEFINE_integer("check_n", 256, "Points used by the honesty checks.")
  flags.DEFINE_string("out", "", "Output JSON (default: WORKDIR/eval_autoattack.json).")
  flags.DEFINE_bool("fresh", False, "Ignore saved per-point results and start over.")
  flags.DEFINE_integer("stop_after_batches", 0, "Testing aid: exit with status 3 after this many "
                       "attack batches (simulates a killed run).")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize (multi-host).")
  flags.DEFINE_multi_string("opt", [], "Attack option overrides KEY=VALUE (n_iter, "
                            "n_target_classes, n_queries, fab_iter, p_init, rho, eot_iter, unroll, "
                            "chunk, driver=auto|host|device); tests use fewer iterations.")


_JITTED = {}  # compiled attack programs, reused across calls with the same model and settings


class Stopped(Exception):
  """Raised by ``stop_after_batches`` (a simulated interruption)."""


def _logits_fn(apply, params, stats):
  """The eval-mode logits function of a model's ``apply`` at fixed variables."""
  return lambda x: apply(params, stats, x, train=False)[0]


def _settings_key(s: dict) -> str:
  return hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


def _save_state(path, state):
  import numpy as np  # pylint: disable=import-outside-toplevel
  tmp = path + ".tmp.npz"
  np.savez(tmp, **state)
  os.replace(tmp, path)


def run_protocol(apply, params, stats, images, labels, *, names, opts: dict, eps: float,
                 norm: str, mesh, batch_size: int, seed: int, state_path: str,
                 settings: dict | None = None, fresh: bool = False, stop_after_batches: int = 0,
                 log=print) -> dict:
  """The attack loop over in-memory test points, sharded over ``mesh`` and resumable.

  ``apply(params, stats, x, train=False) -> (logits, stats)`` is the model; ``images`` are
  uint8 NHWC, ``labels`` int. Per-point results are saved to ``state_path`` after each batch
  and reloaded from it (unless ``fresh``). Returns the state: ``clean`` (int8, 1 = correct),
  ``broken_by`` (int8, -1 none, k = the k-th attack of ``names``, 1-based), ``seen``,
  ``seconds`` (per phase: clean, then each attack), ``max_dist``, ``min_val``, ``max_val``,
  ``recheck_fail``.
  """
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from robust_distill import parallel
  from robust_distill.attacks import autoattack as aa, fab as fab_lib
  from robust_distill.metrics import fmt_time

  o = opts
  n = len(labels)
  ndev = mesh.devices.size
  n_att = len(names)
  if not fresh and os.path.exists(state_path):
    with np.load(state_path) as z:
      st = {k: z[k] for k in z.files}
    log(f"[autoattack] resuming from {state_path}")
  else:
    st = {"clean": np.full(n, -1, np.int8), "broken_by": np.full(n, -1, np.int8),
          "seen": np.zeros((n_att, n), bool), "seconds": np.zeros(n_att + 1),
          "max_dist": np.zeros(()), "recheck_fail": np.zeros((), np.int64), "min_val": np.ones(()), "max_val": np.zeros(())}
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    if settings is not None:
      with open(state_path[:-4] + ".json", "w") as f:
        json.dump(settings, f, indent=1)

  repl = NamedSharding(mesh, P())

  logits_fn_of = functools.partial(_logits_fn, apply)

  host = o["driver"] == "host" or (o["driver"] == "auto" and jax.default_backend() == "cpu")

  def make_fn(name):
    key = (name, eps, norm, tuple(sorted(o.items())), mesh, apply)
    if key not in _JITTED:
      _JITTED[key] = _make_fn(name)
    return _JITTED[key]

  def finish(lf, x, y, active, xa, r, idx):
    """Re-checks the returned points with the same forward (AutoAttack's final check)."""
    still = jnp.argmax(lf(xa), -1) == y
    broken = active & ~r
    dist = jnp.where(broken, fab_lib.flat_norm(xa - x, norm), 0.0)
    # A point counts as broken only if the re-check agrees (conservative).
    return {"idx": idx, "valid": active, "robust": active & (r | still),
            "recheck_fail": jnp.sum(broken & still), "max_dist": jnp.max(dist),
            "min_val": jnp.min(jnp.where(broken[:, None, None, None], xa, 1.0)),
            "max_val": jnp.max(jnp.where(broken[:, None, None, None], xa, 0.0))}

  def _make_fn(name):
    if name == "clean":
      def clean_fn(p, s, batch, key):
        del key
        x = batch["image"].astype(jnp.float32) / 255.0
        ok = jnp.argmax(logits_fn_of(p, s)(x), -1) == batch["label"]
        return {"idx": batch["idx"], "valid": batch["valid"], "robust": ok & batch["valid"]}
      return jax.jit(clean_fn, out_shardings=repl)
    if host:
      runner = aa.HostRunner(lambda v, z: apply(v[0], v[1], z, train=False)[0], eps=eps,
                             norm=norm, **o)
      to_float = jax.jit(lambda im: im.astype(jnp.float32) / 255.0)
      fin = jax.jit(lambda p, s, x, y, a, xa, r, idx: finish(logits_fn_of(p, s), x, y, a, xa, r,
                                                             idx), out_shardings=repl)

      def host_fn(p, s, batch, key):
        x = to_float(batch["image"])
        xa, r = runner.run(name, (p, s), x, batch["label"], batch["valid"], key)
        return fin(p, s, x, batch["label"], batch["valid"], xa, r, batch["idx"])
      return host_fn

    def fn(p, s, batch, key):
      x = batch["image"].astype(jnp.float32) / 255.0
      y, active = batch["label"], batch["valid"]
      lf = logits_fn_of(p, s)
      xa, r = aa.attack_batch(name, lf, x, y, active, eps=eps, norm=norm, rng=key, **o)
      return finish(lf, x, y, active, xa, r, batch["idx"])
    return jax.jit(fn, out_shardings=repl)

  def batches_for(points):
    """Fixed-size global batches over ``points`` (indices into the test split)."""
    for b, start in enumerate(range(0, len(points), batch_size)):
      idx = points[start:start + batch_size]
      valid = np.ones(batch_size, bool)
      valid[len(idx):] = False
      idx = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])
      yield b, idx, valid

  def local(idx, valid):
    sl = parallel.host_rows(mesh, batch_size)
    return {"image": images[idx][sl], "label": labels[idx][sl],
            "valid": valid[sl], "idx": idx[sl].astype(np.int32)}

  done_batches = 0
  phases = ["clean"] + list(names)
  for k, name in enumerate(phases):
    if name == "clean":
      points = np.arange(n)
      todo = st["clean"] < 0
    else:
      # The points robust when attack k started: clean, and not broken by an earlier attack.
      alive = (st["clean"] == 1) & ((st["broken_by"] < 0) | (st["broken_by"] == k))
      points = np.nonzero(alive)[0]
      todo = ~st["seen"][k - 1]
    nb = -(-len(points) // batch_size)
    pending = [(b, idx, v) for b, idx, v in batches_for(points) if todo[idx[v]].any()]
    if not pending:
      continue
    fn = make_fn(name)
    t_att = time.perf_counter()
    log(f"[autoattack] {name}: {len(points)} points in {nb} batches of {batch_size} "
        f"({len(pending)} to do) on {ndev} device(s)")
    for j, (b, idx, valid) in enumerate(pending):
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), k), b)
      t0 = time.perf_counter()
      res = jax.device_get(fn(params, stats, parallel.shard_batch(local(idx, valid), mesh), key))
      ridx, rob = res["idx"], res["robust"]
      vmask = res["valid"]  # padding rows (which repeat a real index) are dropped
      ridx, rob = ridx[vmask], rob[vmask]
      if name == "clean":
        st["clean"][ridx] = rob.astype(np.int8)
      else:
        st["recheck_fail"] = st["recheck_fail"] + int(res["recheck_fail"])
        st["seen"][k - 1][ridx] = True
        st["broken_by"][ridx[~rob]] = k
        st["max_dist"] = np.maximum(st["max_dist"], res["max_dist"])
        st["min_val"] = np.minimum(st["min_val"], res["min_val"])
        st["max_val"] = np.maximum(st["max_val"], res["max_val"])
      st["seconds"][k] += time.perf_counter() - t0
      if jax.process_index() == 0:
        _save_state(state_path, st)
      done_batches += 1
      el = time.perf_counter() - t_att
      robust_now = int(((st["clean"] == 1) & (st["broken_by"] < 0)).sum())
      log(f"[autoattack] {name} batch {j + 1}/{len(pending)}: robust so far "
          f"{robust_now}/{n}, {fmt_time(el)} elapsed, ETA for {name} "
          f"{fmt_time(el / (j + 1) * (len(pending) - j - 1))}")
      if stop_after_batches and done_batches >= stop_after_batches:
        raise Stopped(f"stopped after {done_batches} batches; rerun to resume")

  return st


def evaluate(workdir: str, *, stage: str = "", which: str = "best", attacks: str = "standard",
             eps: float = -1.0, norm: str = "", n: int = 0, batch_size: int = 0, seed: int = 0,
             checks: bool = True, check_n: int = 256, out: str = "", fresh: bool = False,
             opts: dict | None = None, stop_after_batches: int = 0, devices: int = -1,
             log=print) -> dict:
  """Runs the AutoAttack evaluation of a checkpoint (see the module docstring); returns the
  result dict that is also written to ``out``."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import numpy as np
  from robust_distill import honesty, parallel
  from robust_distill.attacks import autoattack as aa
  from robust_distill.data import pipeline
  from robust_distill.metrics import fmt_time
  from robust_distill.train import loop, step as step_lib

  names = aa.resolve(attacks)
  version = attacks if attacks in aa.VERSIONS else "standard"
  o = aa.options(version, **(opts or {}))
  if o["eot_iter"] > 1:
    raise ValueError("eot_iter > 1 (version 'rand') needs a randomized model; the models of "
                     "this library are deterministic in eval mode: use --attacks=standard")
  if not stage:
    stage = "student" if os.path.isdir(os.path.join(workdir, "student", "ckpt")) else "teacher"
  config = loop.read_config(loop.stage_dir(workdir, stage))
  stage_cfg = config[stage]
  eps = eps if eps >= 0 else (config.eval.eps if config.eval.eps >= 0 else stage_cfg.attack.eps)
  norm = norm or stage_cfg.attack.norm
  if norm not in ("linf", "l2"):
    raise ValueError(f"norm must be linf or l2, got {norm!r}")
  mesh = parallel.make_mesh(devices)
  ndev = mesh.devices.size
  batch_size = batch_size or 32 * ndev
  if batch_size % ndev:
    raise ValueError(f"batch size {batch_size} not divisible by {ndev} devices")

  test = loop.load_split(config, "test")
  n_all = pipeline.split_size(test)
  n = n_all if n <= 0 else min(n, n_all)
  shape, num_classes = pipeline.geometry(config.dataset, config.data.mock_like)
  data_info = {"num_classes": num_classes, "shape": shape}
  test = pipeline.take(test, np.arange(n))  # the evaluated points, in memory
  model = loop.load_stage_model(config, stage, workdir, data_info, mesh, which=which)
  apply = step_lib.make_apply(model.graphdef, stage_cfg.temperature)
  params, stats = model.params, model.stats

  logits_fn_of = functools.partial(_logits_fn, apply)
  settings = dict(stage=stage, which=which, step=int(model.step), attacks=list(names), eps=eps,
                  norm=norm, n=n, batch_size=batch_size, seed=seed, opts=o)
  st = run_protocol(apply, params, stats, test["image"][:n], test["label"][:n], names=names,
                    opts=o, eps=eps, norm=norm, mesh=mesh, batch_size=batch_size, seed=seed,
                    state_path=os.path.join(workdir, "autoattack",
                                            f"state_{_settings_key(settings)}.npz"),
                    settings=settings, fresh=fresh, stop_after_batches=stop_after_batches,
                    log=log)
  t_start = time.perf_counter()
  clean = st["clean"] == 1
  robust = clean & (st["broken_by"] < 0)
  per_attack = []
  for k, name in enumerate(names, start=1):
    broke = int((st["broken_by"] == k).sum())
    after = int((clean & ((st["broken_by"] < 0) | (st["broken_by"] > k))).sum())
    per_attack.append({"attack": name, "broken": broke, "robust_after": after / n,
                       "seconds": float(st["seconds"][k])})
  result = {
      "clean_acc": float(clean.mean()), "robust_acc": float(robust.mean()), "n": n, "eps": eps,
      "norm": norm, "attacks": list(names), "version": attacks, "per_attack": per_attack,
      "options": o, "stage": stage, "which": which, "step": int(model.step),
      "model": stage_cfg.model, "temperature": float(stage_cfg.temperature),
      "dataset": config.dataset, "batch_size": batch_size, "devices": ndev,
      "processes": jax.process_count(), "platform": jax.devices()[0].platform,
      "seconds": float(st["seconds"].sum()), "seed": seed,
      "max_perturbation": float(st["max_dist"]),
      "recheck_disagreements": int(st["recheck_fail"]),
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "git_commit": loop._git_commit(),  # pylint: disable=protected-access
  }

  checks = checks and check_n > 0
  if checks and jax.process_count() > 1:
    log("[autoattack] honesty checks skipped in a multi-process run; rerun them on one host")
    checks = False
  if checks:
    tc = time.perf_counter()
    m = min(check_n, n)
    m = m // ndev * ndev if m >= ndev else m
    sharding = parallel.batch_sharding(mesh) if m % ndev == 0 else parallel.replicated(mesh)
    xs = jax.device_put(np.asarray(test["image"][:m], np.float32) / 255.0, sharding)
    ys = jax.device_put(np.asarray(test["label"][:m]), sharding)
    p1, s1 = params, stats  # replicated on the mesh
    lf = jax.jit(logits_fn_of(p1, s1))
    restored = loop.restore_model(workdir, which=which, stage=stage)
    reported = None
    ej = os.path.join(workdir, "eval.json")
    if os.path.exists(ej):
      with open(ej) as f:
        prev = json.load(f)
      if prev.get("stage") == stage and prev.get("n") == n:
        reported = prev.get("clean_acc")
    broken_sq = int((st["broken_by"] == names.index("square") + 1).sum()) if (
        "square" in names) else 0
    if o["driver"] == "device" or (o["driver"] == "auto" and jax.default_backend() != "cpu"):
      robust_fn = honesty.apgd_robust_fn(logits_fn_of(p1, s1), norm=norm)
    else:
      def robust_fn(x_, y_, eps_, n_iter_, seed_):
        key = ("check", eps_, n_iter_, norm, tuple(sorted(o.items())), apply)
        if key not in _JITTED:  # one runner (compiled chunks) per setting, reused across calls
          _JITTED[key] = aa.HostRunner(lambda v, z: apply(v[0], v[1], z, train=False)[0],
                                       eps=eps_, norm=norm, **{**o, "n_iter": n_iter_})
        _, r = _JITTED[key].run("apgd-ce", (p1, s1), x_, y_, jnp.ones(len(y_), bool),
                          jax.random.key(seed_))
        return np.asarray(r)
    cl = [honesty.deterministic(lf, xs), honesty.logits_not_probabilities(lf, xs),
          honesty.gradients(logits_fn_of(p1, s1), xs, ys),
          honesty.eps_monotone(robust_fn, xs, ys, eps=eps, n_iter=o["n_iter"], seed=seed),
          honesty.more_iterations(robust_fn, xs, ys, eps=eps, n_iter=o["n_iter"], seed=seed),
          honesty.attacked_is_reported(lf, restored, xs, clean_acc=result["clean_acc"],
                                       reported_clean=reported,
                                       info={"temperature": float(stage_cfg.temperature),
                                             "batchnorm": "running averages (eval mode)",
                                             "normalisation": "inside the model"}),
          honesty.perturbation_bounds(float(st["max_dist"]), eps, float(st["min_val"]),
                                      float(st["max_val"]))]
    if "square" in names and names.index("square") > 0:
      cl.append(honesty.square_vs_whitebox(n, broken_sq))
    result["checks"] = cl
    result["checks_ok"] = all(c["ok"] for c in cl)
    result["checks_seconds"] = time.perf_counter() - tc

  out = out or os.path.join(workdir, "eval_autoattack.json")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
  log(table(result))
  log(f"[autoattack] wrote {out} ({fmt_time(time.perf_counter() - t_start)} this run)")
  return result


def table(r: dict) -> str:
  """Plain-text report: clean and robust accuracy, the per-attack breakdown, the checks."""
  lines = [f"AutoAttack ({r['version']}) on {r['n']} {r['dataset']} test points, "
           f"{r['norm']} eps={r['eps']:g}, {r['stage']} ({r['model']}, T={r['temperature']:g})",
           f"{'':<14}{'broke':>8}{'robust after':>14}{'seconds':>10}",
           f"{'clean':<14}{'':>8}{100 * r['clean_acc']:>13.2f}%{'':>10}"]
  for a in r["per_attack"]:
    lines.append(f"{a['attack']:<14}{a['broken']:>8}{100 * a['robust_after']:>13.2f}%"
                 f"{a['seconds']:>10.0f}")
  lines.append(f"robust accuracy: {100 * r['robust_acc']:.2f}%  (max perturbation "
               f"{r['max_perturbation']:.4g})")
  if "checks" in r:
    from robust_distill import honesty  # pylint: disable=import-outside-toplevel
    lines.append("honesty checks" + ("" if r["checks_ok"] else " (RED FLAGS: see below)") + ":")
    lines.append(honesty.table(r["checks"]))
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  hostdevices.configure(FLAGS.host_devices)
  from robust_distill import parallel  # pylint: disable=import-outside-toplevel
  parallel.initialize_distributed(FLAGS.distributed)
  from robust_distill.attacks import autoattack  # pylint: disable=import-outside-toplevel
  try:
    opts = autoattack.parse_opts(",".join(FLAGS.opt))
  except ValueError as e:
    sys.exit(f"error: {e}")
  if not FLAGS.workdir:
    sys.exit("--workdir is required")
  try:
    evaluate(FLAGS.workdir, stage=FLAGS.stage, which=FLAGS.which, attacks=FLAGS.attacks,
             eps=FLAGS.eps, norm=FLAGS.norm, n=FLAGS.n, batch_size=FLAGS.batch_size,
             seed=FLAGS.seed, checks=FLAGS.checks, check_n=FLAGS.check_n, out=FLAGS.out,
             fresh=FLAGS.fresh, opts=opts, stop_after_batches=FLAGS.stop_after_batches,
             log=lambda s: print(s, flush=True))
  except Stopped as e:
    print(e, flush=True)
    sys.exit(3)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
