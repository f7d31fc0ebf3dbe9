"""Which code produced a result: a fingerprint of the source files, blind to docs and formatting.

Every ``eval.json`` records ``code_files`` and ``code_fingerprint``: the repository's Python
files that the run had imported (the package's modules and the config files, which
``config.load`` imports from their paths) plus the launch scripts, and a SHA-256 over them. A
Python file enters as its syntax tree with docstrings removed (so comments, docstrings and
formatting do not change the fingerprint, and nothing else can), any other file as its bytes.
A change that can alter a run's numbers changes one of the files it imported (a newly imported
module is imported by a changed one). The README's quickstart figures are valid while the
fingerprint of ``results/quickstart_eval.json``'s files is the one it records (a test checks it);
otherwise rerun README command 1. Standard library only.
"""

import ast
import hashlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Relative to the repository. LAUNCH: files, or directories whose every file (recursively)
# counts; SOURCES: top-level directories whose Python files count when the run imported them.
LAUNCH = ("launch",)
SOURCES = ("robust_distill", "configs")
_SKIP_DIRS = {"__pycache__"}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
          node.body = body[1:] or [ast.Pass()]
  return tree


def normalized(path: str) -> bytes:
  """A file's content as the fingerprint sees it (see the module docstring)."""
  with open(path, "rb") as f:
    data = f.read()
  if path.endswith(".py"):
    return ast.dump(_strip_docstrings(ast.parse(data)), include_attributes=False).encode()
  return data


def files(paths, root: str = ROOT) -> list[str]:
  """The files under ``paths`` (relative to ``root``), sorted, compiled caches excluded."""
  out = []
  for p in paths:
    full = os.path.join(root, p)
    if os.path.isfile(full):
      out.append(p)
      continue
    for d, subdirs, names in os.walk(full):
      subdirs[:] = sorted(s for s in subdirs if s not in _SKIP_DIRS)
      out += [os.path.relpath(os.path.join(d, n), root) for n in names if not n.endswith(".pyc")]
  return sorted(out)


def code_fingerprint(paths, root: str = ROOT) -> str:
  """SHA-256 (hex) over ``(relative path, normalized content)`` of every file in ``files``."""
  h = hashlib.sha256()
  for rel in files(paths, root):
    h.update(rel.replace(os.sep, "/").encode() + b"\0")
    h.update(hashlib.sha256(normalized(os.path.join(root, rel))).digest())
  return h.hexdigest()


def imported_files(root: str = ROOT) -> list[str]:
  """The repository's code this process runs: every imported module whose file lies in
  ``SOURCES`` (the package, and the config files that ``config.load`` imports), plus every file
  in ``LAUNCH``."""
  out = set(files(LAUNCH, root))
  for mod in list(sys.modules.values()):
    path = getattr(mod, "__file__", None)
    if path:
      rel = os.path.relpath(os.path.abspath(path), root)
      if rel.split(os.sep)[0] in SOURCES and rel.endswith(".py"):
        out.add(rel)
  return sorted(out)


def record(root: str = ROOT) -> dict:
  """``{"code_files": [...], "code_fingerprint": ...}`` of this process, for a result file."""
  names = imported_files(root)
  return {"code_files": names, "code_fingerprint": code_fingerprint(names, root)}
