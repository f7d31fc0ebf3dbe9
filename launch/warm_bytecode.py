"""Usage: python launch/warm_bytecode.py MODULE

Imports MODULE and, for ``robust_distill``, every module of the package, so that Python writes
the bytecode of everything a run imports (launch/setup.sh runs it once after installing). A
module that fails to import is skipped: this only saves time, it never decides anything."""

import importlib
import pkgutil
import sys


def main(name: str) -> None:
  try:
    pkg = importlib.import_module(name)
  except Exception:  # noqa: BLE001 (an optional module: nothing to warm)
    return
  if name == "robust_distill":
    for m in pkgutil.walk_packages(pkg.__path__, name + "."):
      try:
        importlib.import_module(m.name)
      except Exception:  # noqa: BLE001 (e.g. an optional dependency not installed)
        pass


if __name__ == "__main__":
  main(sys.argv[1])
