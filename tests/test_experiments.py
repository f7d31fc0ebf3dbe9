"""The results-table suite: runs, resumes, writes Markdown."""

import pytest

from robust_distill.experiments import table


@pytest.mark.slow  # a teacher, two students, their evaluations and the logit study: 2 minutes
def test_results_table_runs_resumes_and_writes_markdown(tmp_path, capsys):
  kw = dict(out_dir=str(tmp_path / "out"), eval_n=64, autoattack_n=32, only=["pgd_at", "dgad"])
  rows = table.run("smoke", str(tmp_path / "wd"), **kw)
  assert [r["entry"] for r in rows] == ["pgd_at", "dgad"]
  md = (tmp_path / "out" / "smoke.md").read_text()
  assert "| PGD-AT |" in md and "| DGAD |" in md and "AutoAttack" in md and "commit" in md
  assert "Shared TRADES teacher" in md and "Standard model" in md and "+0.00 |" in md
  for f in ("report.md", "hist_gap.png", "grid_a_high_b_low.png"):  # the logit study
    assert (tmp_path / "out" / "smoke_logits" / f).stat().st_size > 0, f
  capsys.readouterr()
  again = table.run("smoke", str(tmp_path / "wd"), **kw)  # finished entries are not rerun
  assert "robust_distill: stages" not in capsys.readouterr().out  # printed by every loop.run
  assert [r["clean_acc"] for r in again] == [r["clean_acc"] for r in rows]
