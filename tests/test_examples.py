"""The library and notebook paths: the optax example script, the evaluation notebook (executed
headless on a tiny run's checkpoint) and the generated API reference."""

import json
import os

import pytest

from conftest import ROOT, run_python
from robust_distill import apidoc


def test_optax_example_trains_with_library_losses_and_attacks():
  out = run_python(
    os.path.join(ROOT, "examples", "optax_loop.py"), "--steps=60", "--eval_n=64", timeout=300
  )
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads(out.stdout.strip().splitlines()[-1])
  assert res["after"]["clean"] > res["before"]["clean"] + 0.3
  assert 0.0 <= res["after"]["autoattack"] <= res["after"]["clean"]


@pytest.mark.xdist_group("trained")
def test_notebook_runs_headless_on_a_tiny_checkpoint(trained_workdir):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  wd = trained_workdir[0]  # the notebook only reads the run
  nb = nbformat.read(os.path.join(ROOT, "examples", "evaluate_checkpoint.ipynb"), as_version=4)
  os.environ["ROBUST_DISTILL_WORKDIR"] = wd
  os.environ["ROBUST_DISTILL_EVAL_N"] = "64"
  try:
    nbclient.NotebookClient(
      nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
  finally:
    os.environ.pop("ROBUST_DISTILL_WORKDIR")
    os.environ.pop("ROBUST_DISTILL_EVAL_N")
  text = "".join(
    o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
  )
  assert "clean accuracy" in text and "PGD-20 accuracy" in text and "APGD-CE + APGD-T" in text
  images = [
    o
    for c in nb.cells
    if c.cell_type == "code"
    for o in c.get("outputs", [])
    if "image/png" in o.get("data", {})
  ]
  assert len(images) == 3  # training curves, logit histograms, adversarial examples


def test_api_reference_is_current():
  with open(os.path.join(ROOT, "docs", "api.md")) as f:
    assert f.read() == apidoc.render(), "docs/api.md is stale: python -m robust_distill.apidoc"
