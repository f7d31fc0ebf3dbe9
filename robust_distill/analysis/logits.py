"""Logit distributions of standard vs adversarially trained networks (Seguin et al., "Understanding
the Logit Distributions of Adversarially-Trained Deep Neural Networks", arXiv 2108.12001).

Per example, on clean inputs: the max logit, the logit gap (largest minus second-largest logit)
and the confidence (largest softmax probability). ``compare`` contrasts two models: their
averages, the rank correlation of their per-example confidences, and the examples on which they
disagree most (high confidence in one, low in the other). ``write_report`` saves histograms and
example grids as PNG and a Markdown report.

The paper's distillation from manipulated non-max logits is a loss option,
``student.loss.kd_teacher_transform`` (``robust_distill.losses.distill.manipulate_nonmax``).

    python -m robust_distill.analysis.logits --standard=runs/std --robust=runs/quickstart \
        --out=results/logit_study [--n=2000]
"""

import argparse
import os

import jax
from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend
import numpy as np

from robust_distill import workdir as workdir_lib
from robust_distill.data import pipeline


def logit_stats(logits, labels=None) -> dict:
  """Per-example ``max_logit``, ``gap``, ``confidence`` (and ``correct`` with labels)."""
  z = np.asarray(logits, np.float64)
  srt = np.sort(z, -1)
  e = np.exp(z - srt[:, -1:])
  out = {"max_logit": srt[:, -1], "gap": srt[:, -1] - srt[:, -2], "confidence": 1.0 / e.sum(-1)}
  if labels is not None:
    out["correct"] = z.argmax(-1) == np.asarray(labels)
  return out


def _ranks(v):
  r = np.empty(len(v))
  r[np.argsort(v, kind="stable")] = np.arange(len(v))
  return r


def compare(a: dict, b: dict, k: int = 16) -> dict:
  """Summary of two models' statistics on the same examples.

  ``spearman``: rank correlation of the per-example confidences; ``a_high_b_low`` /
  ``b_high_a_low``: the ``k`` examples with the largest confidence difference each way.
  """
  ra, rb = _ranks(a["confidence"]), _ranks(b["confidence"])
  spearman = float(np.corrcoef(ra, rb)[0, 1])
  diff = a["confidence"] - b["confidence"]
  summary = {
    name: {
      f"{q}_{s}": float(f(m[q]))
      for q in ("max_logit", "gap", "confidence")
      for s, f in (("mean", np.mean), ("median", np.median))
    }
    for name, m in (("a", a), ("b", b))
  }
  return {
    "spearman_confidence": spearman,
    "summary": summary,
    "a_high_b_low": np.argsort(-diff)[:k].tolist(),
    "b_high_a_low": np.argsort(diff)[:k].tolist(),
  }


def write_report(
  out_dir: str,
  names: tuple[str, str],
  stats: tuple[dict, dict],
  images=None,
  labels=None,
  *,
  k: int = 16,
  title: str = "Logit distributions",
) -> dict:
  """Histograms (PNG), example grids (PNG, when ``images`` are given) and ``report.md``."""
  os.makedirs(out_dir, exist_ok=True)
  cmp = compare(stats[0], stats[1], k=k)
  files = []
  for q in ("max_logit", "gap", "confidence"):
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for name, s in zip(names, stats):
      ax.hist(s[q], bins=50, alpha=0.6, label=name)
    ax.set_xlabel(q.replace("_", " "))
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, f"hist_{q}.png")
    fig.savefig(path, dpi=100)
    files.append(os.path.basename(path))
  if images is not None:
    for key, caption in (
      ("a_high_b_low", f"{names[0]} confident, {names[1]} not"),
      ("b_high_a_low", f"{names[1]} confident, {names[0]} not"),
    ):
      idx = cmp[key]
      cols = 8
      rows = -(-len(idx) // cols)
      fig = Figure(figsize=(cols * 1.2, rows * 1.4))
      axes = fig.subplots(rows, cols)
      for ax, i in zip(np.ravel(axes), list(idx) + [None] * (rows * cols - len(idx))):
        ax.axis("off")
        if i is None:
          continue
        img = np.asarray(images[i])
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
        ax.set_title(f"{stats[0]['confidence'][i]:.2f}/{stats[1]['confidence'][i]:.2f}", fontsize=7)
      fig.suptitle(caption + " (confidences a/b)", fontsize=9)
      fig.tight_layout()
      path = os.path.join(out_dir, f"grid_{key}.png")
      fig.savefig(path, dpi=100)
      files.append(os.path.basename(path))
  s = cmp["summary"]
  lines = [
    f"# {title}",
    "",
    f"Models: **a** = {names[0]}, **b** = {names[1]}; "
    f"{len(stats[0]['confidence'])} clean test examples.",
    "",
    "| statistic | a mean | a median | b mean | b median |",
    "|---|---|---|---|---|",
  ]
  for q in ("max_logit", "gap", "confidence"):
    lines.append(
      f"| {q} | {s['a'][q + '_mean']:.3f} | {s['a'][q + '_median']:.3f} | "
      f"{s['b'][q + '_mean']:.3f} | {s['b'][q + '_median']:.3f} |"
    )
  lines += [
    "",
    f"Spearman rank correlation of the per-example confidences: {cmp['spearman_confidence']:.3f}.",
    "",
  ]
  lines += [f"![{f}]({f})" for f in files]
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return cmp


def _model_logits(model, images, batch=500):
  f = jax.jit(model.__call__)
  return np.concatenate(
    [np.asarray(f(images[i : i + batch])) for i in range(0, len(images), batch)]
  )


def study(standard: str, robust: str, out: str, *, n: int = 2000) -> dict:
  """The study on the first ``n`` clean test points: restores the models of the workdirs
  ``standard`` and ``robust`` (their student, or else their teacher), computes the statistics
  and writes the report to ``out``; returns ``compare``'s summary."""
  models = [workdir_lib.restore(w) for w in (standard, robust)]
  cfg = models[1].config
  test = workdir_lib.load_split(cfg, "test")
  test = pipeline.take(test, np.arange(min(n, pipeline.split_size(test))))
  x = test["image"].astype(np.float32) / 255.0
  y = test["label"]
  stats = tuple(logit_stats(_model_logits(m, x), y) for m in models)
  cmp = write_report(
    out,
    ("standard", "adversarially trained"),
    stats,
    images=x,
    labels=y,
    title=f"Logit distributions: standard vs adversarially trained "
    f"({cfg.dataset}, first {len(y)} test images)",
  )
  print(f"wrote {out}/report.md (Spearman {cmp['spearman_confidence']:.3f})", flush=True)
  return cmp


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--standard", required=True, help="workdir of a standard (clean) model")
  p.add_argument("--robust", required=True, help="workdir of an adversarially trained model")
  p.add_argument("--out", default="results/logit_study")
  p.add_argument("--n", type=int, default=2000)
  a = p.parse_args(argv)
  study(a.standard, a.robust, a.out, n=a.n)


if __name__ == "__main__":
  main()
