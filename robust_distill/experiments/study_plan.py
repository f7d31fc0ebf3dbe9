"""The Fashion-MNIST study's plan as run configs: ``configs/fmnist_study.py`` read, and each
entry's config built from its method's Fashion-MNIST config, the study's teacher, student budget
and evaluation, and the entry's ``path=value`` overrides."""

import ast
import os

from robust_distill import config as config_lib, settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAN = os.path.join(ROOT, "configs", "fmnist_study.py")


def load_plan(suite: str):
  """The study's plan: ``configs/fmnist_study.py`` (``suite`` 'fmnist_study' or 'smoke')."""
  return config_lib.load(PLAN + (":smoke" if suite == "smoke" else ""))


def teacher_run_config(kind: str, suite: str):
  return config_lib.load(PLAN + f":teacher:{kind}" + (":smoke" if suite == "smoke" else ""))


def parse_overrides(spec: str) -> list[tuple[str, str, str]]:
  """``'path=value;path=value'`` -> ``[(item, path, raw value)]`` (an item without '=' is an
  error naming it)."""
  out = []
  for item in (s.strip() for s in spec.split(";")):
    if not item:
      continue
    path, sep, raw = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r}: expected PATH=VALUE")
    out.append((item, path.strip(), raw.strip()))
  return out


def apply_overrides(c, spec: str) -> None:
  """Applies ``path=value;path=value`` to config ``c`` in place (values parsed as Python
  literals, else kept as strings; an unknown path is an error naming it)."""
  for item, path, raw in parse_overrides(spec):
    *parents, key = path.split(".")
    node = c
    for p in parents:
      if p not in node:
        raise ValueError(f"override {item!r}: the config has no field {path!r}")
      node = node[p]
    if key not in node:
      raise ValueError(f"override {item!r}: the config has no field {path!r}")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    if isinstance(node[key], float) and isinstance(value, int):
      value = float(value)
    node[key] = value


def teacher_kind(c) -> str:
  """'clean' for a method whose teacher trains without attacks (AGKD-BML), else 'robust'."""
  return "clean" if c.teacher.attack.steps == 0 else "robust"


def entry_config(plan, name: str, seed: int, teacher_dirs: dict, suite: str):
  """The run config of entry ``name`` with seed ``seed``: its method's Fashion-MNIST config with
  the study's teacher (published stage dir ``teacher_dirs[kind]``), student budget, evaluation
  and the entry's overrides."""
  e = plan.entries[name]
  c = config_lib.load(os.path.join(ROOT, "configs", f"{e.config}.py:fmnist"))
  stages = c.stages.split(",")
  if "teacher" in stages:
    kind = teacher_kind(c)
    source = c.teacher.source
    c.teacher = teacher_run_config(kind, suite).teacher
    c.teacher.source = source
    c.teacher.workdir = teacher_dirs[kind]
    stages.remove("teacher")
  c.stages = ",".join(stages)
  s = c.student
  s.model = plan.student.model
  s.model_kwargs = dict(width=plan.student.width, hidden=plan.student.hidden)
  s.optim.epochs = plan.student.epochs
  # Ten validation points per run: the last fifth of training spans three of them.
  s.val_every_epochs = plan.student.epochs / 10
  c.seed = seed
  apply_overrides(c, e.set)
  if plan.smoke:
    settings.shrink_to_smoke(c)
  c.eval.update(eval_block(plan, e.group))
  return c


def eval_block(plan, group: str) -> dict:
  """The study's evaluation settings: AutoAttack on fewer points for the rows that test one
  paper's claim (the ablations and the logit-manipulation students, item 4 of the plan)."""
  p = plan.eval
  aa_n = p.ablation_autoattack_n if group in ("ablation", "logit") else p.autoattack_n
  return dict(
    n=p.n, cw_n=p.cw_n, val_n=p.val_n, autoattack="standard", autoattack_n=aa_n,
    autoattack_check_n=min(p.check_n, aa_n), autoattack_batch_size=0,
  )  # fmt: skip
