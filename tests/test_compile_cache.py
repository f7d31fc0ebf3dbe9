"""The entry points' compilation cache: JAX's per-write cap stays off, and a local cache is
trimmed once at start-up, least recently used programs first."""

import os

from conftest import run_python

from robust_distill import compile_cache


def _program(d, name, size, t):
  path = os.path.join(d, f"{name}-cache")
  with open(path, "wb") as f:
    f.truncate(size)  # sparse: st_size is what trim counts
  os.utime(path, (t, t))
  return path


def test_trim_removes_least_recently_used_until_under_the_cap(tmp_path):
  d = str(tmp_path)
  old = _program(d, "old", 400, 1_000)
  with open(os.path.join(d, "old-atime"), "wb") as f:  # JAX's own access-time file, if capped
    f.write(b"0")
  mid = _program(d, "mid", 400, 2_000)
  new = _program(d, "new", 400, 3_000)
  other = os.path.join(d, "notes.txt")  # not a program: never touched
  with open(other, "w") as f:
    f.write("y" * 5000)
  assert compile_cache.trim(d, max_bytes=900) == 400
  assert not os.path.exists(old) and not os.path.exists(os.path.join(d, "old-atime"))
  assert os.path.exists(mid) and os.path.exists(new) and os.path.exists(other)
  assert compile_cache.trim(d, max_bytes=399) == 800
  assert sorted(os.listdir(d)) == ["notes.txt"]
  assert compile_cache.trim(d, max_bytes=0) == 0


def test_trim_leaves_remote_and_missing_paths_alone(tmp_path):
  assert compile_cache.trim("gs://bucket/jax", max_bytes=0) == 0
  assert compile_cache.trim(str(tmp_path / "absent"), max_bytes=0) == 0


def test_configure_sets_jax_uncapped_and_trims_before_jax(tmp_path):
  d = tmp_path / "cache"
  d.mkdir()
  kept = _program(str(d), "b", 10, 2_000)
  dropped = _program(str(d), "a", compile_cache.MAX_BYTES, 1_000)
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.pop(compile_cache.ENV_SWITCH, None)
  env["JAX_COMPILATION_CACHE_DIR"] = str(d)
  code = (
    "import os, sys; from robust_distill import compile_cache as c; p = c.configure(); "
    "print(p, os.environ.get('JAX_COMPILATION_CACHE_MAX_SIZE', 'unset'), 'jax' in sys.modules)"
  )
  r = run_python("-c", code, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.split() == [str(d), "-1", "False"]
  assert os.path.exists(kept) and not os.path.exists(dropped)
  env[compile_cache.ENV_SWITCH] = "off"
  r = run_python("-c", code, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.split() == ["None", "unset", "False"]


def test_trim_never_fails_a_run(tmp_path, monkeypatch):
  d = str(tmp_path)
  locked = _program(d, "locked", 400, 1_000)
  gone = _program(d, "gone", 400, 2_000)
  kept = _program(d, "kept", 400, 3_000)
  unlink = os.unlink

  def fake_unlink(path):
    if path == locked:
      raise PermissionError(path)  # e.g. a cache shared read-only
    if path == gone:
      unlink(path)
      raise FileNotFoundError(path)  # another process trimmed it first
    unlink(path)

  monkeypatch.setattr(compile_cache.os, "unlink", fake_unlink)
  # The locked file is skipped (not counted), the one trimmed elsewhere counts as freed.
  assert compile_cache.trim(d, max_bytes=900) == 400
  assert os.path.exists(locked) and not os.path.exists(gone) and os.path.exists(kept)
  monkeypatch.setattr(compile_cache.os, "scandir", lambda p: (_ for _ in ()).throw(OSError(p)))
  assert compile_cache.trim(d, max_bytes=0) == 0
