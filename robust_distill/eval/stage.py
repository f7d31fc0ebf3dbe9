"""The pipeline's eval stage: clean / PGD-k / CW-inf over the test split, then AutoAttack (the
same ``eval.autoattack.evaluate`` as the CLI) on a subset; writes ``WORKDIR/eval.json``."""

import os
import time

import jax

from robust_distill import provenance, workdir as workdir_lib
from robust_distill.attacks import autoattack
from robust_distill.eval import metrics, report
from robust_distill.eval.autoattack import evaluate
from robust_distill.models import make_apply


def evaluate_stage(config, name: str, workdir: str, test, mesh, *, log=print) -> dict:
  """Clean / PGD-k / CW-inf accuracy of the stage's best checkpoint over the test split
  ``test``, and AutoAttack on its first ``eval.autoattack_n`` points when configured."""
  e = config.eval
  stage_cfg = config[name]
  eps = e.eps if e.eps >= 0 else stage_cfg.attack.eps
  g, p, s, _ = workdir_lib.load_stage_model(config, name, workdir, mesh)
  apply = make_apply(g, stage_cfg.temperature)
  kw = dict(
    eps=eps,
    norm=stage_cfg.attack.norm,
    pgd_steps=e.pgd_steps,
    pgd_step_size=e.pgd_step_size,
    cw_steps=e.cw_steps,
    cw_step_size=e.cw_step_size,
    unroll=stage_cfg.attack.unroll,
  )
  make = lambda **over: metrics.make_eval_fn(apply, **{**kw, **over})
  t = time.perf_counter()
  run = lambda fn, limit, label: metrics.run_eval(
    fn, p, s, test, mesh, batch_size=e.batch_size, limit=limit, seed=config.seed + 1, log=log,
    label=label,
  )  # fmt: skip
  n_test = len(test["label"]) if e.n < 0 else min(e.n, len(test["label"]))
  if 0 < e.cw_n < n_test and e.cw_steps > 0:
    # CW on the first cw_n points only: clean + PGD over all of them, then CW over the prefix.
    # Each batch keeps its random key, so the figures equal those of the one-pass evaluation.
    res = run(make(cw_steps=0), e.n, f"eval {name}")
    res_cw = run(make(pgd_steps=0), e.cw_n, f"eval {name}, CW")
    res.update(cw_acc=res_cw["cw_acc"], cw_n=res_cw["n"])
  else:
    res = run(make(), e.n, f"eval {name}")
    res["cw_n"] = res["n"]
  res.update(
    eps=eps,
    norm=stage_cfg.attack.norm,
    pgd_steps=e.pgd_steps,
    cw_steps=e.cw_steps,
    stage=name,
    model=stage_cfg.model,
    temperature=stage_cfg.temperature,
    dataset=config.dataset,
    seconds=time.perf_counter() - t,
    smoke=config.steps > 0,
    command=workdir_lib.command_line(),
    git_commit=workdir_lib.git_commit(),
    **provenance.record(),
    devices=mesh.devices.size,
    platform=jax.devices()[0].platform,
  )
  if e.autoattack:
    aa_res = evaluate(
      workdir,
      stage=name,
      attacks=e.autoattack,
      eps=eps,
      n=e.autoattack_n,
      seed=config.seed,
      batch_size=e.autoattack_batch_size,
      check_n=e.autoattack_check_n,
      opts=autoattack.parse_opts(e.autoattack_opts),
      log=log,
    )
    res.update(
      autoattack_acc=aa_res["robust_acc"],
      autoattack_clean_acc=aa_res["clean_acc"],
      autoattack_n=aa_res["n"],
      autoattack_checks_ok=aa_res.get("checks_ok"),
      autoattack_version=e.autoattack,
    )
  report.write_json(os.path.join(workdir, "eval.json"), res)
  log(
    report.table(res, f"Evaluation of the {name} ({stage_cfg.model}, {config.dataset} test split)")
  )
  return res
