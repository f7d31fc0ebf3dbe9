"""The logit-distribution study's statistics, plots and report."""

import numpy as np

from robust_distill.analysis import logits as la


def test_logit_analysis_writes_plots_and_report(tmp_path):
  r = np.random.RandomState(1)
  y = r.randint(0, 10, 64)
  std = r.randn(64, 10) * 3
  rob = std * 0.3 + r.randn(64, 10) * 0.5
  sa, sb = la.logit_stats(std, y), la.logit_stats(rob, y)
  np.testing.assert_allclose(sa["gap"], np.sort(std, -1)[:, -1] - np.sort(std, -1)[:, -2])
  cmp = la.write_report(
    str(tmp_path), ("standard", "robust"), (sa, sb), images=r.rand(64, 28, 28, 1), labels=y, k=8
  )
  for f in (
    "report.md",
    "hist_max_logit.png",
    "hist_gap.png",
    "hist_confidence.png",
    "grid_a_high_b_low.png",
    "grid_b_high_a_low.png",
  ):
    assert (tmp_path / f).stat().st_size > 0, f
  assert -1.0 <= cmp["spearman_confidence"] <= 1.0 and len(cmp["a_high_b_low"]) == 8
  assert cmp["summary"]["a"]["max_logit_mean"] > cmp["summary"]["b"]["max_logit_mean"]
