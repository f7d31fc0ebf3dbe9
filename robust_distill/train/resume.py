"""Resuming a stage: the check that a workdir's stored config matches the one asked for."""

import json
import os

from robust_distill import config as C, workdir as workdir_lib


class ConfigMismatch(ValueError):
  """A workdir holds a stage trained with settings other than the ones asked for.

  ``stage_directory`` and ``diffs`` (one ``"key: stored X, now Y"`` per differing setting) let a
  caller say it in its own words; ``str(e)`` is the message for the training command line."""

  def __init__(self, stage_directory: str, name: str, diffs: list[str]):
    self.stage_directory, self.diffs = stage_directory, list(diffs)
    super().__init__(
      f"{stage_directory} holds a {name} stage trained with other settings:\n  "
      + "\n  ".join(diffs)
      + "\nUse another --workdir, or "
      "--config.checkpoint.allow_config_change=True to resume it anyway."
    )


# Stage settings that may change between a run and its resumption: they change neither the
# maths nor the data order.
RESUMABLE_CHANGES = ("val_every_epochs", "attack.unroll", "stop_at_step")
# Data settings of that kind: where the files are, and how many processes read them.
DATA_RESUMABLE_CHANGES = ("data.data_dir", "data.manual_dir", "data.workers")


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
  started = os.path.exists(os.path.join(stage_directory, "done.json")) or any(
    os.listdir(os.path.join(stage_directory, d))
    for d in ("ckpt", "ckpt_best")
    if os.path.isdir(os.path.join(stage_directory, d))
  )
  if not started:  # a start that failed before its first checkpoint blocks nothing
    return
  old = _flatten(workdir_lib.read_config(stage_directory).to_dict())
  new = _flatten(C.upgrade(json.loads(config.to_json_best_effort())).to_dict())  # as stored
  keys = ["dataset", "seed"] + [
    k for k in new if k.startswith("data.") and k not in DATA_RESUMABLE_CHANGES
  ]
  keys += [
    k for k in new if k.startswith(name + ".") and k[len(name) + 1 :] not in RESUMABLE_CHANGES
  ]
  done = os.path.join(stage_directory, "done.json")
  if os.path.exists(done):
    with open(done) as f:
      if "imported_from" in json.load(f):  # an imported network: only its architecture counts
        keys = [k for k in keys if k.startswith((f"{name}.model", "dataset"))]
  diffs = [f"{k}: stored {old[k]!r}, now {new[k]!r}" for k in keys if k in old and old[k] != new[k]]
  if diffs:
    raise ConfigMismatch(stage_directory, name, diffs)
