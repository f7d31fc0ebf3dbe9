"""The README's and docs' launcher commands are the ones that run: every line of a code block that
asks for a dry run (``--dry-run`` or ``DRY_RUN=1``) is executed as written, and the snippets for
the notebook and library users name functions that exist."""

import glob
import os
import re
import subprocess

from conftest import ROOT
import robust_distill
from robust_distill import attacks, losses, models


def _code_lines(lang: str = "bash|python") -> list[str]:
  text = ""
  for path in [os.path.join(ROOT, "README.md")] + sorted(
    glob.glob(os.path.join(ROOT, "docs", "*.md"))
  ):
    with open(path) as f:
      text += f.read()
  blocks = re.findall(rf"```(?:{lang})\n(.*?)```", text, flags=re.S)
  lines, pending = [], ""
  for block in blocks:
    for line in block.splitlines():
      line = line.split("  #")[0].rstrip() if not line.lstrip().startswith("#") else ""
      if line.endswith("\\"):
        pending += line[:-1] + " "
        continue
      lines.append(pending + line)
      pending = ""
  return [ln.strip() for ln in lines if ln.strip()]


def test_readme_dry_run_commands_print_the_training_command():
  dry = [ln for ln in _code_lines("bash") if "--dry-run" in ln or "DRY_RUN=1" in ln]
  launchers = {m for ln in dry for m in re.findall(r"launch/(\w+\.(?:sh|sbatch))", ln)}
  assert launchers == {"local.sh", "tpu_pod.sh", "slurm.sbatch"}, dry
  for line in dry:
    out = subprocess.run(["bash", "-c", line], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (line, out.stderr)
    assert "robust_distill.main" in out.stdout, (line, out.stdout)


def test_readme_python_snippets_name_real_functions():
  text = "\n".join(_code_lines())
  for mod, name in [
    (robust_distill, "restore"),
    (models, "from_torch"),
    (attacks, "pgd"),
    (losses, "trades_kl"),
  ]:
    assert f"{name}(" in text, name
    assert callable(getattr(mod, name)), name
  assert "python -m robust_distill.import_teacher" in text
