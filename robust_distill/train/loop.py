"""The pipeline: teacher training -> teacher-logit precompute -> student training -> evaluation.

Every stage lives in its own folder of the workdir and is resumable: a finished stage writes
``done.json`` and is skipped next time; an unfinished training stage resumes from its latest
good checkpoint (model, optimizer and data-iterator state), and ends with exactly the parameters
an uninterrupted run would have.
"""

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robust_distill import config as C
from robust_distill import evaluation, models, parallel, teacher as teacher_lib
from robust_distill.data import pipeline
from robust_distill.metrics import Progress, Writer, fmt_time, read_jsonl
from robust_distill.train import checkpoint as ckpt_lib
from robust_distill.train import step as step_lib


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or Inf; the last good checkpoint is left untouched."""


class _Stop:
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


def build_model(stage_cfg, num_classes: int, image_shape, seed: int):
  return models.build_for_data(stage_cfg.model, stage_cfg.model_kwargs, num_classes=num_classes,
                               image_shape=image_shape, seed=seed)


def load_split(config, split: str):
  """One split of the config's dataset (in memory, or a ``pipeline.LazySplit``)."""
  d = config.data
  return pipeline.load_split(config.dataset, split, data_dir=d.data_dir or None,
                             manual_dir=d.manual_dir, mock_examples=d.mock_examples,
                             mock_like=d.mock_like)


def load_data(config) -> dict:
  """Train (minus validation), validation and test splits. A synthetic (mock) train split
  smaller than ``data.val_size`` holds out a quarter of itself instead."""
  d = config.data
  train, test = load_split(config, "train"), load_split(config, "test")
  n = pipeline.split_size(train)
  val_size = min(d.val_size, n // 4) if config.dataset == "mock" else d.val_size
  tr_idx, val_idx = pipeline.split_train_val(n, val_size, d.seed)
  shape, num_classes = pipeline.geometry(config.dataset, d.mock_like)
  return {"train": train, "train_idx": tr_idx, "val": pipeline.subset(train, val_idx),
          "test": test, "num_classes": num_classes, "shape": shape}


def stage_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def _val_eval_fn(config, stage_cfg, apply):
  a = stage_cfg.attack
  eps = config.eval.eps if config.eval.eps >= 0 else a.eps
  return evaluation.make_eval_fn(apply, eps=eps, norm=a.norm, pgd_steps=config.eval.val_pgd_steps,
                                 cw_steps=0, unroll=a.unroll)


class StageModel(NamedTuple):
  graphdef: Any
  params: Any
  stats: Any
  step: int


def load_stage_model(config, name: str, workdir: str, data: dict, mesh, *, which: str = "best"
                     ) -> StageModel:
  """The newest ``which`` ('best' or 'latest') checkpoint of a trained stage, replicated on
  ``mesh``; falls back to 'latest' when the stage has no best checkpoint."""
  sdir = (config.teacher.workdir if name == "teacher" and config.teacher.workdir
          else stage_dir(workdir, name))
  stage_cfg = config[name]
  model = build_model(stage_cfg, data["num_classes"], data["shape"], config.seed)
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  repl = parallel.replicated(mesh)
  ck = ckpt_lib.Checkpointer(sdir)
  kind = which if ck.steps(which) else "latest"
  steps = ck.steps(kind)
  if not steps:
    raise FileNotFoundError(f"no checkpoint of stage {name!r} in {sdir}; train it first")
  tx = step_lib.make_optimizer(stage_cfg.optim, 1)
  abstract = ckpt_lib.abstract({"params": params, "stats": stats, "opt": tx.init(params),
                                "step": jnp.zeros((), jnp.int32)}, repl)
  state, _ = ck.restore(steps[-1], abstract, kind=kind)
  ck.close()
  return StageModel(graphdef, state["params"], state["stats"], steps[-1])


class ConfigMismatch(ValueError):
  """A workdir holds a stage trained with settings other than the ones asked for."""


# Stage settings that may change between a run and its resumption: they change neither the
# maths nor the data order.
RESUMABLE_CHANGES = ("val_every_epochs", "attack.unroll", "stop_at_step")


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_resumable(config, name: str, stage_directory: str) -> None:
  """Raises ``ValueError`` if ``stage_directory`` holds a stage trained with other settings.

  Compares the dataset, the seed, the data options (paths excepted) and the stage's own block
  with the stored ``config.json``; keys that only one side has (an older schema) are skipped,
  and of an imported stage (``robust_distill.import_teacher``) only the model is compared.
  ``--config.checkpoint.allow_config_change=True`` turns the check off.
  """
  if config.checkpoint.allow_config_change:
    return
  if not os.path.exists(os.path.join(stage_directory, "config.json")):
    return
  old = _flatten(read_config(stage_directory).to_dict())
  new = _flatten(C.upgrade(json.loads(config.to_json_best_effort())).to_dict())  # as stored
  keys = ["dataset", "seed"] + [k for k in new if k.startswith("data.")
                                and k not in ("data.data_dir", "data.manual_dir")]
  keys += [k for k in new if k.startswith(name + ".")
           and k[len(name) + 1:] not in RESUMABLE_CHANGES]
  done = os.path.join(stage_directory, "done.json")
  if os.path.exists(done):
    with open(done) as f:
      if "imported_from" in json.load(f):  # an imported network: only its architecture counts
        keys = [k for k in keys if k.startswith((f"{name}.model", "dataset"))]
  diffs = [f"{k}: stored {old[k]!r}, now {new[k]!r}" for k in keys
           if k in old and old[k] != new[k]]
  if diffs:
    raise ConfigMismatch(
        f"{stage_directory} holds a {name} stage trained with other settings:\n  "
        + "\n  ".join(diffs) + "\nUse another --workdir, or "
        "--config.checkpoint.allow_config_change=True to resume it anyway.")


def train_stage(config, name: str, workdir: str, data: dict, mesh, *, teacher=None) -> dict:
  """Trains stage ``name`` ('teacher' or 'student'); returns its final metrics. ``run`` has
  checked the stage directory with ``check_resumable`` before loading any data.

  ``teacher`` is ``None``, ``{"logits", "ids"}`` (precomputed) or ``{"graphdef", "params",
  "stats"}`` (online).
  """
  stage_cfg = config[name]
  sdir = stage_dir(workdir, name)
  done_path = os.path.join(sdir, "done.json")
  if os.path.exists(done_path):
    log(f"[{name}] already trained: {sdir}")
    with open(done_path) as f:
      return json.load(f)
  os.makedirs(sdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(sdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))

  model = build_model(stage_cfg, data["num_classes"], data["shape"], config.seed)
  global_batch = stage_cfg.batch_size
  parallel.local_batch_size(global_batch, mesh)
  steps_per_epoch = len(data["train_idx"]) // global_batch
  if steps_per_epoch == 0:
    raise ValueError(f"[{name}] the global batch ({global_batch}) is larger than the training "
                     f"split ({len(data['train_idx'])} examples)")
  total = max(int(round(stage_cfg.optim.epochs * steps_per_epoch)), 1)
  if config.steps > 0:
    total = min(total, config.steps)
  val_every = max(int(round(stage_cfg.val_every_epochs * steps_per_epoch)), 1)
  tx = step_lib.make_optimizer(stage_cfg.optim, steps_per_epoch)
  graphdef, state = step_lib.init_state(model, tx)
  repl = parallel.replicated(mesh)

  ck = ckpt_lib.Checkpointer(sdir, keep=config.checkpoint.keep)
  restored, meta = ck.restore_latest(ckpt_lib.abstract(state, repl),
                                     skip_corrupt=config.checkpoint.skip_corrupt, log=log)
  if restored is not None:
    state = restored
    log(f"[{name}] resumed from step {int(state['step'])} ({sdir})")
  else:
    if stage_cfg.get("init_from", ""):
      state = _init_from(state, stage_cfg.init_from, teacher, tx)
      log(f"[{name}] initialised from the {stage_cfg.init_from}'s parameters")
    state = parallel.replicate(state, mesh)
    meta = {"data_iter": None, "best_val": -1.0}
  start = int(jax.device_get(state["step"]))

  online = teacher is not None and "graphdef" in teacher
  t_logits = t_ids = None
  if teacher is not None and not online:
    t_logits, t_ids = teacher["logits"], teacher["ids"]
  it = pipeline.train_iterator(
      data["train"], data["train_idx"], global_batch=global_batch,
      seed=config.data.seed * 1000 + config.seed, augment=config.data.augment,
      host_rows=parallel.host_rows(mesh, global_batch),
      teacher_logits=t_logits, teacher_ids=t_ids, state=meta["data_iter"],
      class_pool=step_lib.class_pool_size(stage_cfg), num_classes=data["num_classes"])

  step_fn = jax.jit(step_lib.make_train_step(stage_cfg, graphdef, tx,
                                             teacher_graphdef=teacher["graphdef"] if online
                                             else None, steps_per_epoch=steps_per_epoch),
                    donate_argnums=(0,), out_shardings=(repl, repl))
  teacher_vars = (teacher["params"], teacher["stats"]) if online else None
  apply = step_lib.make_apply(graphdef, stage_cfg.temperature)
  val_fn = _val_eval_fn(config, stage_cfg, apply)
  rng = jax.random.key(config.seed + (0 if name == "teacher" else 7))
  writer = Writer(sdir)
  progress = Progress(total, global_batch, start)
  best = meta.get("best_val", -1.0)
  last_saved = start
  log(f"[{name}] {stage_cfg.model}, {total} steps ({stage_cfg.optim.epochs} epochs of "
      f"{steps_per_epoch}), batch {global_batch} on {mesh.devices.size} device(s), loss "
      f"{step_lib.active_terms(stage_cfg.loss)}, attack {stage_cfg.attack.objective} "
      f"{stage_cfg.attack.norm} eps={stage_cfg.attack.eps:.4g} x{stage_cfg.attack.steps}")

  def save(step_no, kind="latest", extra=None):
    m = {"data_iter": it.get_state(), "best_val": best, "step": step_no,
         "epoch": step_no / steps_per_epoch, "stage": name,
         "config": json.loads(config.to_json_best_effort()), **(extra or {})}
    ck.save(step_no, state, m, kind=kind)

  stop_at = int(stage_cfg.stop_at_step)
  try:
    with _Stop() as stopper:
      for s in range(start, total):
        batch = parallel.shard_batch(next(it), mesh)
        batch.pop("id")
        state, metrics = step_fn(state, batch, rng, teacher_vars)
        metrics = jax.device_get(metrics)
        bad = [k for k, v in metrics.items() if k.startswith("loss") and not np.isfinite(v)]
        if bad:
          ck.finish()
          good = ck.steps()
          raise NonFiniteLossError(
              f"[{name}] non-finite loss at step {s + 1}: "
              + ", ".join(f"{k}={metrics[k]}" for k in bad)
              + (f". The last good checkpoint (step {good[-1]}) in {sdir}/ckpt is intact."
                 if good else ". No checkpoint had been saved yet."))
        done_steps = s + 1
        if done_steps % config.log_every == 0 or done_steps == total or done_steps == start + 1:
          ips, eta = progress.update(done_steps)
          metrics["images_per_s"] = ips
          writer.write(done_steps, {k: v for k, v in metrics.items() if np.isfinite(v)})
          log(f"[{name}] step {done_steps}/{total} ep {done_steps / steps_per_epoch:.2f} "
              f"loss {metrics['loss']:.4f} "
              + " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in metrics.items()
                         if k.startswith("acc/"))
              + (f" | {ips:.0f} img/s ETA {fmt_time(eta)}" if np.isfinite(ips) else ""))
        if done_steps % val_every == 0 or done_steps == total:
          t = time.perf_counter()
          v = evaluation.run_eval(val_fn, state["params"], state["stats"], data["val"], mesh,
                                  batch_size=config.eval.batch_size, limit=config.eval.val_n,
                                  seed=config.seed)
          writer.write(done_steps, {f"val/{k}": x for k, x in v.items()})
          log(f"[{name}] validation at step {done_steps}: clean {100 * v['clean_acc']:.2f}% "
              f"PGD-{config.eval.val_pgd_steps} {100 * v['pgd_acc']:.2f}% "
              f"({time.perf_counter() - t:.0f}s)")
          if v["pgd_acc"] > best:
            best = v["pgd_acc"]
            save(done_steps, "best", {"val": v})
          save(done_steps, "latest", {"val": v})
          last_saved = done_steps
        elif done_steps % config.checkpoint.every_steps == 0:
          save(done_steps)
          last_saved = done_steps
        if stopper.requested or (stop_at and done_steps == stop_at and done_steps < total):
          if last_saved != done_steps:
            save(done_steps)
          ck.finish()
          raise Interrupted(f"[{name}] stopped at step {done_steps}; rerun the same command to "
                            "resume")
  finally:
    ck.close()
    writer.close()
  result = {"steps": total, "best_val_pgd_acc": best,
            "final_val": read_jsonl(os.path.join(sdir, "metrics.jsonl"))[-1]}
  evaluation.write_json(done_path, result)
  return result


def _init_from(state, source: str, teacher, tx):
  """The fresh ``state`` with the parameters and BN statistics of ``source`` ('teacher': the
  online teacher, same architecture), e.g. AGKD-BML's student initialised from its clean
  teacher; a fresh optimizer state."""
  if source != "teacher" or teacher is None or "graphdef" not in teacher:
    raise ValueError(f"init_from={source!r} needs an online teacher (teacher.source='online')")
  mine = jax.tree.map(lambda a: (a.shape, a.dtype), (state["params"], state["stats"]))
  theirs = jax.tree.map(lambda a: (a.shape, a.dtype), (teacher["params"], teacher["stats"]))
  if jax.tree.structure(mine) != jax.tree.structure(theirs) or mine != theirs:
    raise ValueError("init_from='teacher': the student and the teacher have different "
                     "architectures; give them the same model and model_kwargs")
  params, stats = jax.device_get((teacher["params"], teacher["stats"]))
  return {**state, "params": params, "stats": stats, "opt": tx.init(params)}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the configured stages in order; returns the evaluation results (if evaluated)."""
  names = C.stage_names(config)
  C.validate(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config.num_devices)
  if config.steps > 0:
    config = C.smoke_limits(config, mesh.devices.size)
    log(f"smoke run (steps={config.steps}): {config.steps} steps per training stage, batches of "
        f"{config.eval.batch_size}, one evaluation batch; the numbers mean nothing")
  for name in ("teacher", "student"):
    if name in names:
      check_resumable(config, name, stage_dir(workdir, name))
  log(f"robust_distill: stages {names} on {mesh.devices.size} {jax.devices()[0].platform} "
      f"device(s), {jax.process_count()} process(es); workdir {os.path.abspath(workdir)}")
  t0 = time.perf_counter()
  data = load_data(config)
  log(f"data: {config.dataset}, {len(data['train_idx'])} train / "
      f"{pipeline.split_size(data['val'])} val / {pipeline.split_size(data['test'])} test "
      f"examples ({time.perf_counter() - t0:.1f}s)")
  logits_dir = os.path.join(workdir, "teacher_logits")
  results = {}

  if "teacher" in names and not config.teacher.workdir:
    train_stage(config, "teacher", workdir, data, mesh)
  if "precompute" in names:
    g, p, s, _ = load_stage_model(config, "teacher", workdir, data, mesh)
    apply = step_lib.make_apply(g, config.teacher.temperature)
    teacher_lib.precompute(apply, p, s, data["train"], logits_dir, mesh,
                           batch_size=config.eval.batch_size,
                           flip_aware=config.teacher.flip_aware, log=log)
  if "student" in names:
    teacher = None
    if step_lib.needs_teacher(config.student):
      if config.teacher.source == "online":
        g, p, s, _ = load_stage_model(config, "teacher", workdir, data, mesh)
        teacher = {"graphdef": g, "params": p, "stats": s}
      else:
        logits, ids = teacher_lib.load(logits_dir)
        teacher = {"logits": logits / config.teacher.temperature, "ids": ids}
    train_stage(config, "student", workdir, data, mesh, teacher=teacher)
  if "eval" in names:
    results = evaluate_stage(config, "student", workdir, data, mesh)
  log(f"total wall time {fmt_time(time.perf_counter() - t0)}")
  return results


def evaluate_stage(config, name: str, workdir: str, data: dict, mesh) -> dict:
  """Clean / PGD-k / CW-inf accuracy of the stage's best checkpoint over the test split."""
  e = config.eval
  stage_cfg = config[name]
  eps = e.eps if e.eps >= 0 else stage_cfg.attack.eps
  g, p, s, _ = load_stage_model(config, name, workdir, data, mesh)
  apply = step_lib.make_apply(g, stage_cfg.temperature)
  fn = evaluation.make_eval_fn(apply, eps=eps, norm=stage_cfg.attack.norm, pgd_steps=e.pgd_steps,
                               pgd_step_size=e.pgd_step_size, cw_steps=e.cw_steps,
                               cw_step_size=e.cw_step_size, unroll=stage_cfg.attack.unroll)
  t = time.perf_counter()
  res = evaluation.run_eval(fn, p, s, data["test"], mesh, batch_size=e.batch_size, limit=e.n,
                            seed=config.seed + 1, log=log, label=f"eval {name}")
  res.update(eps=eps, norm=stage_cfg.attack.norm, pgd_steps=e.pgd_steps, cw_steps=e.cw_steps,
             stage=name, model=stage_cfg.model, temperature=stage_cfg.temperature,
             dataset=config.dataset, seconds=time.perf_counter() - t, smoke=config.steps > 0,
             command=" ".join([os.path.basename(sys.executable)] + sys.argv),
             git_commit=_git_commit(), devices=mesh.devices.size,
             platform=jax.devices()[0].platform)
  if e.autoattack:
    from robust_distill import evaluate as aa_eval  # pylint: disable=import-outside-toplevel
    from robust_distill.attacks import autoattack  # pylint: disable=import-outside-toplevel
    aa_res = aa_eval.evaluate(workdir, stage=name, attacks=e.autoattack, eps=eps,
                              n=e.autoattack_n, seed=config.seed,
                              batch_size=e.autoattack_batch_size,
                              check_n=e.autoattack_check_n,
                              opts=autoattack.parse_opts(e.autoattack_opts), log=log)
    res.update(autoattack_acc=aa_res["robust_acc"], autoattack_clean_acc=aa_res["clean_acc"],
               autoattack_n=aa_res["n"], autoattack_checks_ok=aa_res.get("checks_ok"),
               autoattack_version=e.autoattack)
  evaluation.write_json(os.path.join(workdir, "eval.json"), res)
  log(evaluation.table(res, f"Evaluation of the {name} ({stage_cfg.model}, "
                            f"{config.dataset} test split)"))
  return res


def _git_commit() -> str:
  """The commit of the code that produced a result ('' outside a git checkout)."""
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10,
                          check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ""


class RestoredModel:
  """A trained model restored for interactive use: ``restored(x)`` gives eval-mode logits
  (divided by the stage's fixed temperature, i.e. exactly the function that was trained and
  evaluated) for images in [0, 1], NHWC.

  Attributes: ``module`` (the NNX module), ``config``, ``stage``, ``step``, ``history`` (the
  metrics.jsonl records), ``temperature``.
  """

  def __init__(self, module, config, stage, step, history):
    self.module, self.config, self.stage, self.step, self.history = (module, config, stage,
                                                                     step, history)
    self.temperature = float(config[stage].temperature)
    self.module.eval()

  def __call__(self, x):
    return self.module(jnp.asarray(x, jnp.float32)) / self.temperature


def read_config(stage_directory: str) -> ml_collections.ConfigDict:
  """The config a stage was trained with (``STAGE/config.json``), in today's schema."""
  path = os.path.join(stage_directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no trained stage in {stage_directory} ({path} missing)")
  with open(path) as f:
    return C.upgrade(json.load(f))


def restore_model(workdir: str, *, which: str = "best", stage: str | None = None
                  ) -> RestoredModel:
  """Restores stage ``stage`` (default: 'student' if trained, else 'teacher') of ``workdir``.

  Works on any number of devices, whatever the number the checkpoint was saved on: the
  parameters are restored onto the first local device.
  """
  if which not in ("best", "latest"):
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
  if stage is None:
    stage = "student" if os.path.isdir(os.path.join(workdir, "student", "ckpt")) else "teacher"
  sdir = stage_dir(workdir, stage)
  config = read_config(sdir)
  shape, num_classes = pipeline.geometry(config.dataset, config.data.mock_like)
  mesh = parallel.make_mesh(1, devices=jax.local_devices())
  data = {"num_classes": num_classes, "shape": shape}
  m = load_stage_model(config, stage, workdir, data, mesh, which=which)
  return RestoredModel(nnx.merge(m.graphdef, m.params, m.stats), config, stage, m.step,
                       read_jsonl(os.path.join(sdir, "metrics.jsonl")))
