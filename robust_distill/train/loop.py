"""The pipeline: teacher training -> teacher-logit precompute -> student training -> evaluation.

Every stage lives in its own folder of the workdir and is resumable: a finished stage writes
``done.json`` and is skipped next time; an unfinished training stage resumes from its latest
good checkpoint (model, optimizer and data-iterator state), and ends with exactly the parameters
an uninterrupted run would have.

``Interrupted`` and ``NonFiniteLossError`` (``train.interrupt``) are the ways a stage stops early.
"""

import json
import os
import time

import jax
import ml_collections
import numpy as np

from robust_distill import (
  config as C,
  faults,
  files,
  parallel,
  teacher as teacher_lib,
  workdir as workdir_lib,
)
from robust_distill.data import pipeline
from robust_distill.data.splits import load_data
from robust_distill.eval import metrics as eval_metrics, report
from robust_distill.eval.stage import evaluate_stage
from robust_distill.metrics import Progress, Writer, fmt_time, read_jsonl
from robust_distill.models import make_apply
from robust_distill.losses import terms
from robust_distill.train import checkpoint as ckpt_lib, optim, step as step_lib
from robust_distill.train.interrupt import Interrupted, NonFiniteLossError, Stop, log
from robust_distill.train.resume import check_resumable


def _val_eval_fn(config, stage_cfg, apply):
  a = stage_cfg.attack
  eps = config.eval.eps if config.eval.eps >= 0 else a.eps
  return eval_metrics.make_eval_fn(
    apply, eps=eps, norm=a.norm, pgd_steps=config.eval.val_pgd_steps, cw_steps=0, unroll=a.unroll
  )


def train_stage(config, name: str, workdir: str, data: dict, mesh, *, teacher=None) -> dict:
  """Trains stage ``name`` ('teacher' or 'student'); returns its final metrics. ``run`` has
  checked the stage directory with ``check_resumable`` before loading any data.

  ``teacher`` is ``None``, ``{"logits", "ids"}`` (precomputed) or ``{"graphdef", "params",
  "stats"}`` (online).
  """
  stage_cfg = config[name]
  sdir = workdir_lib.stage_dir(workdir, name)
  done_path = os.path.join(sdir, "done.json")
  if os.path.exists(done_path):
    log(f"[{name}] already trained: {sdir}")
    with open(done_path) as f:
      return json.load(f)
  os.makedirs(sdir, exist_ok=True)
  if jax.process_index() == 0:
    files.write_text(os.path.join(sdir, "config.json"), config.to_json_best_effort(indent=1))

  model = workdir_lib.build_model(stage_cfg, data["num_classes"], data["shape"], config.seed)
  global_batch = stage_cfg.batch_size
  parallel.local_batch_size(global_batch, mesh)
  steps_per_epoch = len(data["train_idx"]) // global_batch
  if steps_per_epoch == 0:
    raise ValueError(
      f"[{name}] the global batch ({global_batch}) is larger than the training "
      f"split ({len(data['train_idx'])} examples)"
    )
  total = max(int(round(stage_cfg.optim.epochs * steps_per_epoch)), 1)
  if config.steps > 0:
    total = min(total, config.steps)
  val_every = max(int(round(stage_cfg.val_every_epochs * steps_per_epoch)), 1)
  tx = optim.make_optimizer(stage_cfg.optim, steps_per_epoch)
  graphdef, state = step_lib.init_state(model, tx)
  repl = parallel.replicated(mesh)
  state_sh = parallel.state_sharding(state, mesh)  # replicated unless the mesh has fsdp

  ck = ckpt_lib.Checkpointer(sdir, keep=config.checkpoint.keep)
  restored, meta = ck.restore_latest(ckpt_lib.abstract(state, state_sh), log=log)
  if restored is not None:
    state = restored
    log(f"[{name}] resumed from step {int(state['step'])} ({sdir})")
  else:
    if stage_cfg.get("init_from", ""):
      state = step_lib.init_from(state, stage_cfg.init_from, teacher, tx)
      log(f"[{name}] initialised from the {stage_cfg.init_from}'s parameters")
    state = parallel.place_state(state, mesh)
    meta = {"data_iter": None, "best_val": -1.0}
  start = int(jax.device_get(state["step"]))

  online = teacher is not None and "graphdef" in teacher
  t_logits = t_ids = None
  if teacher is not None and not online:
    t_logits, t_ids = teacher["logits"], teacher["ids"]
  it = pipeline.train_iterator(
    data["train"],
    data["train_idx"],
    global_batch=global_batch,
    seed=C.train_seed(config),
    augment=config.data.augment,
    host_rows=parallel.host_rows(mesh, global_batch),
    teacher_logits=t_logits,
    teacher_ids=t_ids,
    state=meta["data_iter"],
    class_pool=C.class_pool_size(stage_cfg),
    num_classes=data["num_classes"],
    workers=config.data.get("workers", 0),
    views=config.data.get("views", 0),
  )

  step_fn = jax.jit(
    step_lib.make_train_step(
      stage_cfg,
      graphdef,
      tx,
      teacher_graphdef=teacher["graphdef"] if online else None,
      teacher_temperature=config.teacher.temperature,
      steps_per_epoch=steps_per_epoch,
    ),
    donate_argnums=(0,),
    out_shardings=(state_sh, repl),
  )
  teacher_vars = (teacher["params"], teacher["stats"]) if online else None
  apply = make_apply(graphdef, stage_cfg.temperature)
  finite = step_lib.make_finite_check(apply)
  val_fn = _val_eval_fn(config, stage_cfg, apply)
  rng = jax.random.key(config.seed + (0 if name == "teacher" else 7))
  writer = Writer(sdir)
  progress = Progress(total, global_batch, start)
  best = meta.get("best_val", -1.0)
  last_saved = start
  log(
    f"[{name}] {stage_cfg.model}, {total} steps ({stage_cfg.optim.epochs} epochs of "
    f"{steps_per_epoch}), batch {global_batch} on {mesh.devices.size} device(s), loss "
    f"{terms.active_terms(stage_cfg.loss)}, attack {stage_cfg.attack.objective} "
    f"{stage_cfg.attack.norm} eps={stage_cfg.attack.eps:.4g} x{stage_cfg.attack.steps}"
  )

  def save(step_no, kind="latest", extra=None):
    if not bool(finite(state["params"], state["stats"], batch["image"])):
      good = ck.steps()
      raise NonFiniteLossError(
        f"[{name}] the parameters after step {step_no} are not finite or give non-finite "
        f"logits (its loss terms were finite: {_terms(metrics)}); not saved. "
        + (f"The last good checkpoint, step {good[-1]}, is intact." if good else "")
      )
    m = {
      "data_iter": it.get_state(),
      "best_val": best,
      "step": step_no,
      "epoch": step_no / steps_per_epoch,
      "stage": name,
      "config": json.loads(config.to_json_best_effort()),
      **(extra or {}),
    }
    ck.save(step_no, state, m, kind=kind, log=log)

  stop_at = int(stage_cfg.stop_at_step)
  try:
    with Stop() as stopper:
      for s in range(start, total):
        batch = parallel.shard_batch(next(it), mesh)
        batch.pop("id")
        state, metrics = step_fn(state, batch, rng, teacher_vars)
        metrics = jax.device_get(metrics)
        bad = [
          k
          for k, v in metrics.items()
          if (k.startswith("loss") or k in ("grad_norm", "param_norm")) and not np.isfinite(v)
        ]
        if bad:
          good = ck.steps()
          raise NonFiniteLossError(
            f"[{name}] step {s + 1}: loss {float(metrics['loss']):.4g} ({_terms(metrics)}); "
            + "non-finite: "
            + ", ".join(f"{k}={metrics[k]}" for k in bad)
            + (
              f". The last good checkpoint (step {good[-1]}) in {sdir}/ckpt is intact."
              if good
              else ". No checkpoint had been saved yet."
            )
          )
        done_steps = s + 1
        faults.point(f"{name}:step:{done_steps}")
        if done_steps % config.log_every == 0 or done_steps == total or done_steps == start + 1:
          ips, eta = progress.update(done_steps)
          metrics["images_per_s"] = ips
          writer.write(done_steps, {k: v for k, v in metrics.items() if np.isfinite(v)})
          log(
            f"[{name}] step {done_steps}/{total} ep {done_steps / steps_per_epoch:.2f} "
            f"loss {metrics['loss']:.4f} "
            + " ".join(
              f"{k.split('/')[-1]} {v:.3f}" for k, v in metrics.items() if k.startswith("acc/")
            )
            + (f" | {ips:.0f} img/s ETA {fmt_time(eta)}" if np.isfinite(ips) else "")
          )
        if done_steps % val_every == 0 or done_steps == total:
          t = time.perf_counter()
          v = eval_metrics.run_eval(
            val_fn,
            state["params"],
            state["stats"],
            data["val"],
            mesh,
            batch_size=config.eval.batch_size,
            limit=config.eval.val_n,
            seed=config.seed,
          )
          writer.write(done_steps, {f"val/{k}": x for k, x in v.items()})
          log(
            f"[{name}] validation at step {done_steps}: clean {100 * v['clean_acc']:.2f}% "
            f"PGD-{config.eval.val_pgd_steps} {100 * v['pgd_acc']:.2f}% "
            f"({time.perf_counter() - t:.0f}s)"
          )
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
          raise Interrupted(
            f"[{name}] stopped at step {done_steps}; rerun the same command to resume"
          )
  finally:
    ck.close()
    writer.close()
  result = {
    "steps": total,
    "best_val_pgd_acc": best,
    "final_val": read_jsonl(os.path.join(sdir, "metrics.jsonl"))[-1],
  }
  report.write_json(done_path, result)
  return result


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the configured stages in order; returns the evaluation results (if evaluated)."""
  names = C.stage_names(config)
  C.validate(config)
  mesh = parallel.make_mesh(config.num_devices, fsdp=config.get("fsdp", 1))
  if config.steps > 0:
    config = C.smoke_limits(config, mesh.devices.size)
    log(
      f"smoke run (steps={config.steps}): {config.steps} steps per training stage, batches of "
      f"{config.eval.batch_size}, one evaluation batch; the numbers mean nothing"
    )
  C.check_devices(config, mesh.devices.size)
  files.check_writable(workdir)
  for name in ("teacher", "student"):
    if name in names:
      check_resumable(config, name, workdir_lib.stage_dir(workdir, name))
  log(
    f"robust_distill: stages {names} on {mesh.devices.size} {jax.devices()[0].platform} "
    f"device(s), {jax.process_count()} process(es); workdir {os.path.abspath(workdir)}"
  )
  t0 = time.perf_counter()
  data = load_data(config)
  log(
    f"data: {config.dataset}, {len(data['train_idx'])} train / "
    f"{pipeline.split_size(data['val'])} val / {pipeline.split_size(data['test'])} test "
    f"examples ({time.perf_counter() - t0:.1f}s)"
  )
  logits_dir = os.path.join(workdir, "teacher_logits")
  results = {}

  if "teacher" in names and not config.teacher.workdir:
    train_stage(config, "teacher", workdir, data, mesh)
  if "precompute" in names:
    teacher_lib.run_stage(config, workdir, data, mesh, logits_dir, log=log)
  if "student" in names:
    teacher = None
    if C.needs_teacher(config.student):
      teacher = teacher_lib.for_student(config, workdir, data, mesh, logits_dir, log=log)
    train_stage(config, "student", workdir, data, mesh, teacher=teacher)
  if "eval" in names:
    results = evaluate_stage(config, "student", workdir, data["test"], mesh, log=log)
  log(f"total wall time {fmt_time(time.perf_counter() - t0)}")
  return results


def _terms(metrics) -> str:
  """The loss terms of a step's metrics, ``loss/<term>=value``."""
  return ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items() if k.startswith("loss/"))
