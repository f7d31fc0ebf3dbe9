"""Which code produced a result: a fingerprint of the source files, blind to docs and formatting.

Every ``eval.json`` records ``code_fingerprint()``: a SHA-256 over the package's Python files,
the quickstart's configs and the launch scripts. A Python file enters as its syntax tree with
docstrings removed (so comments, docstrings and formatting do not change the fingerprint, and
nothing else can), any other file as its bytes. The README's quickstart figures are valid while
``results/quickstart_eval.json``'s fingerprint equals the checkout's (a test checks it): a change
to code that the figures depend on means rerunning README command 1. Standard library only.
"""

import ast
import hashlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Relative to the repository: directories (every file below, recursively) and files.
QUICKSTART_CODE = ("robust_distill", "configs/fmnist_ltd.py", "configs/ltd_trades.py", "launch")
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


def files(paths=QUICKSTART_CODE, root: str = ROOT) -> list[str]:
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


def code_fingerprint(paths=QUICKSTART_CODE, root: str = ROOT) -> str:
  """SHA-256 (hex) over ``(relative path, normalized content)`` of every file in ``files``."""
  h = hashlib.sha256()
  for rel in files(paths, root):
    h.update(rel.replace(os.sep, "/").encode() + b"\0")
    h.update(hashlib.sha256(normalized(os.path.join(root, rel))).digest())
  return h.hexdigest()
