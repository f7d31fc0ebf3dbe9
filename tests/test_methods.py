"""The method vocabulary: new loss terms against NumPy transcriptions of the official formulas,
each method config's total loss, 2 training steps per method on the 8-device mesh, the attacks
raising their objectives, and AWP leaving no trace but the gradient."""

import glob
import importlib.util
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_distill import config as C, methods, models, parallel
from robust_distill.train import step as step_lib

from conftest import ROOT

# One config file per method (configs/<method>.py); the per-dataset files (cifar10.py, ...,
# imagenet_ltd.py) are tested by test_paper_configs.py, fmnist_ltd.py by the pipeline tests.
METHODS = sorted(os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(f)[:-3] in methods.RECIPES)


def _config(name, arg="smoke"):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


# --- NumPy references ------------------------------------------------------------------------

def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), -1)


def _ctx(loss_cfg, *, clean, adv, t_clean, t_adv, y, epoch=0.0):
  """A step context whose 'model' returns its input: the student's logits are given directly."""
  apply = lambda p, s, x, train, features=False: (((x, {}) if features else x), s)
  t_fn = lambda xa, features=False: (jnp.asarray(t_adv), {}) if features else jnp.asarray(t_adv)
  return step_lib.Context(apply, None, {}, jnp.asarray(clean), jnp.asarray(adv), jnp.asarray(y),
                          jnp.asarray(t_clean), loss_cfg, teacher_fn=t_fn, epoch=epoch)


@pytest.fixture
def logits():
  r = np.random.RandomState(0)
  b, c = 6, 5
  y = np.array([0, 1, 2, 3, 4, 0])
  t_clean = r.randn(b, c).astype(np.float32) * 2
  t_clean[0, 3] = 10.0  # teacher wrong on example 0 (class 3 beats y = 0)
  t_clean[1, 1] = 10.0  # teacher right on example 1
  return dict(clean=r.randn(b, c).astype(np.float32), adv=r.randn(b, c).astype(np.float32),
              t_clean=t_clean, t_adv=r.randn(b, c).astype(np.float32) * 2, y=y)


def _loss_cfg(**kw):
  return C.stage(loss=dict(ce_adv=1.0, **kw)).loss


def test_els_swap_matches_definition():
  z = np.array([[1.0, 5.0, 2.0], [4.0, 1.0, 0.0], [0.0, 1.0, 3.0]], np.float32)
  y = np.array([0, 0, 2])
  out = np.asarray(step_lib.els_swap(jnp.asarray(z), jnp.asarray(y), jnp.array([True, True, False])))
  np.testing.assert_array_equal(out[0], [5.0, 1.0, 2.0])  # true class 0 and top class 1 swapped
  np.testing.assert_array_equal(out[1], z[1])  # already correct: unchanged
  np.testing.assert_array_equal(out[2], z[2])  # not selected


@pytest.mark.parametrize("dgad_map,dgad_els", [(1, 1), (0, 1), (1, 0)])
def test_dgad_kd_matches_numpy(logits, dgad_map, dgad_els):
  d = logits
  cfg = _loss_cfg(dgad_kd=1.0, dgad_map=dgad_map, dgad_els=dgad_els)
  got = np.asarray(step_lib.LOSS_TERMS["dgad_kd"](_ctx(cfg, **d)))
  wrong = d["t_clean"].argmax(-1) != d["y"]
  tc, ta = d["t_clean"].copy(), d["t_adv"].copy()
  for i in range(len(d["y"])):
    yi = d["y"][i]
    for t, sel in ((tc, wrong[i]), (ta, True)):
      k = max((c for c in range(t.shape[1]) if c != yi), key=lambda c: t[i, c])
      if dgad_els and sel and t[i, yi] < t[i, k]:
        t[i, yi], t[i, k] = t[i, k], t[i, yi]
  m = wrong if dgad_map else np.zeros_like(wrong)
  ref = np.where(m, _kl(_softmax(tc), _softmax(d["clean"])), _kl(_softmax(ta), _softmax(d["adv"])))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  if dgad_map:
    assert wrong[0] and not wrong[1]


def test_pcr_iad_and_kd_options_match_numpy(logits):
  d = logits
  cfg = _loss_cfg(pcr=1.0, iad_intro=1.0, iad_beta=0.1, iad_begin=1.0, kd_adv_adv=1.0,
                  kd_reduction="mean_all", kd_teacher_temperature=2.0,
                  kd_student_temperature=3.0, kd_scale=9.0)
  ps, pa = _softmax(d["clean"]), _softmax(d["adv"])
  got = {k: np.asarray(step_lib.LOSS_TERMS[k](_ctx(cfg, epoch=1.5, **d)))
         for k in ("pcr", "iad_intro", "kd_adv_adv")}
  np.testing.assert_allclose(got["pcr"], np.mean((pa - ps) ** 2, -1), rtol=1e-5)
  a = _softmax(d["t_adv"])[np.arange(6), d["y"]] ** 0.1
  np.testing.assert_allclose(got["iad_intro"], (1 - a) * _kl(ps, pa), rtol=1e-5, atol=1e-7)
  kd = 9.0 * _kl(_softmax(d["t_adv"] / 2.0), _softmax(d["adv"] / 3.0)) / 5
  np.testing.assert_allclose(got["kd_adv_adv"], kd, rtol=1e-5)
  before = np.asarray(step_lib.LOSS_TERMS["iad_intro"](_ctx(cfg, epoch=0.5, **d)))
  np.testing.assert_array_equal(before, 0.0)  # a_i = 1 before iad_begin


def _total(cfg_loss, d):
  ctx = _ctx(cfg_loss, **d)
  terms = step_lib.active_terms(cfg_loss)
  return float(sum(w * jnp.mean(step_lib.LOSS_TERMS[k](ctx)) for k, w in terms.items()))


def test_method_totals_match_the_official_formulas(logits):
  d = logits
  ps, pa = _softmax(d["clean"]), _softmax(d["adv"])
  pt, pta = _softmax(d["t_clean"]), _softmax(d["t_adv"])
  y, b = d["y"], len(d["y"])
  ce_adv = -np.log(pa[np.arange(b), y])
  ce_clean = -np.log(ps[np.arange(b), y])
  refs = {
      "pgd_at": ce_adv.mean(),
      "trades": ce_clean.mean() + 6 * _kl(ps, pa).mean(),
      # RSLAD: 5/6 and 1/6 of KL means over B x C.
      "rslad": 5 / 6 * _kl(pt, pa).sum() / (b * 5) + 1 / 6 * _kl(pt, ps).sum() / (b * 5),
      # ARD: tau^2 * KLDivLoss mean over B x C, tau = 30.
      "ard": 900 * _kl(_softmax(d["t_clean"] / 30), _softmax(d["adv"] / 30)).sum() / (b * 5),
      "adaad": _kl(pta, pa).sum() / (b * 5),
  }
  # MART: boosted CE + 5 * weighted KL (ResNet-18 beta).
  other = np.where(np.eye(5, dtype=bool)[y], -np.inf, pa).argmax(-1)
  bce = ce_adv - np.log(1.0001 - pa[np.arange(b), other] + 1e-12)
  wkl = np.sum(ps * (np.log(ps) - np.log(pa + 1e-12)), -1) * (1.0000001 - ps[np.arange(b), y])
  refs["mart"] = bce.mean() + 5 * wkl.mean()
  for name, ref in refs.items():
    np.testing.assert_allclose(_total(_config(name).student.loss, d), ref, rtol=1e-5,
                               err_msg=name)


def test_every_method_has_its_config_file():
  assert METHODS == sorted(methods.RECIPES)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_two_steps_on_8_devices(name):
  cfg = _config(name)
  C.validate(cfg)
  s = cfg.student
  mesh = parallel.make_mesh(8)
  build = lambda: models.build(s.model, **s.model_kwargs)
  tx = step_lib.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(build(), tx)
  online = step_lib.needs_teacher(s) and cfg.teacher.source == "online"
  tg, tvars = None, None
  if online:
    tg, tp, ts = nnx.split(models.build(cfg.teacher.model, seed=1, **cfg.teacher.model_kwargs),
                           nnx.Param, nnx.BatchStat)
    tvars = parallel.replicate((tp, ts), mesh)
  repl = parallel.replicated(mesh)
  fn = jax.jit(step_lib.make_train_step(s, graphdef, tx, teacher_graphdef=tg, steps_per_epoch=1),
               out_shardings=(repl, repl))
  r = np.random.default_rng(0)
  batch = {"image": r.integers(0, 255, (32, 28, 28, 1), dtype=np.uint8),
           "label": r.integers(0, 10, 32).astype(np.int32)}
  if step_lib.needs_teacher(s) and not online:
    batch["teacher_logits"] = r.normal(size=(32, 10)).astype(np.float32)
  if step_lib.class_pool_size(s):
    batch["pool_image"] = r.integers(0, 255, (10, step_lib.class_pool_size(s), 28, 28, 1),
                                     dtype=np.uint8)
  state = parallel.replicate(state, mesh)
  gb = parallel.shard_batch(batch, mesh)
  for i in range(2):
    state, m = fn(state, gb, jax.random.key(i), tvars)
  m = jax.device_get(m)
  assert np.isfinite(m["loss"]), name
  assert int(state["step"]) == 2


@pytest.mark.parametrize("objective", sorted(step_lib.ATTACK_OBJECTIVES))
def test_each_training_attack_raises_its_objective(objective):
  model = models.build("small_cnn", width=8, hidden=32)
  teacher = models.build("small_cnn", seed=3, width=8, hidden=32)
  g, p, st = nnx.split(model, nnx.Param, nnx.BatchStat)
  tg, tp, ts = nnx.split(teacher, nnx.Param, nnx.BatchStat)
  apply, t_apply = step_lib.make_apply(g), step_lib.make_apply(tg)
  s = C.stage(loss=dict(ce_adv=1.0), attack_cfg=C.attack(eps=0.1, step_size=0.025, steps=10,
                                                          objective=objective, init="normal"))
  r = np.random.default_rng(1)
  x = jnp.asarray(r.uniform(size=(16, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(r.integers(0, 10, 16))
  t_fn = lambda xa: t_apply(tp, ts, xa, train=False)[0]
  t_logits = t_fn(x)
  x_adv = step_lib.attack_fn(s, apply, p, st, teacher_logits=t_logits, teacher_fn=t_fn)(
      x, y, jax.random.key(0))
  f = lambda v: apply(p, st, v, train=False)[0]
  from robust_distill.losses import core  # pylint: disable=import-outside-toplevel
  obj = {"ce": lambda v: core.cross_entropy(f(v), y),
         "cw": lambda v: core.cw_margin(f(v), y),
         "kl_self": lambda v: core.kl_logits(f(x), f(v)),
         "kl_teacher": lambda v: core.kl_logits(t_logits, f(v)),
         "kl_models": lambda v: core.kl_logits(t_fn(v), f(v)),
         # Towards the most confusing class: its log-probability rises.
         "ce_confusing": lambda v: -core.cross_entropy(f(v), step_lib.most_confusing(f(x), y))
         }[objective]
  start = x + 0.001 * jax.random.normal(jax.random.key(5), x.shape)
  assert float(jnp.mean(obj(x_adv))) > float(jnp.mean(obj(start)))


def test_awp_perturbation_is_restored_after_the_step():
  s = C.stage(loss=dict(ce_adv=1.0), lr=0.1, momentum=0.0, weight_decay=0.0,
              schedule="constant", attack_cfg=C.attack(eps=0.1, steps=0, init="none"))
  s.awp.update(gamma=0.01, proxy_lr=0.01)
  model = models.build("small_cnn", width=8, hidden=32)
  tx = step_lib.make_optimizer(s.optim, 10)
  graphdef, state = step_lib.init_state(model, tx)
  r = np.random.default_rng(2)
  batch = {"image": jnp.asarray(r.integers(0, 255, (16, 28, 28, 1), dtype=np.uint8)),
           "label": jnp.asarray(r.integers(0, 10, 16).astype(np.int32))}
  new, m = jax.jit(step_lib.make_train_step(s, graphdef, tx))(state, batch, jax.random.key(0),
                                                               None)
  # Independent computation: v from the formula, gradient at w + v, SGD update applied to w.
  apply = step_lib.make_apply(graphdef)
  x = batch["image"].astype(jnp.float32) / 255.0
  loss = lambda p: jnp.mean(step_lib.core.cross_entropy(apply(p, state["stats"], x, train=True)[0],
                                                        batch["label"]))
  w = state["params"]
  g0 = jax.grad(loss)(w)
  def v_of(wl, gl):
    wl, gl = np.asarray(wl), np.asarray(gl)
    if wl.ndim <= 1:
      return np.zeros_like(wl)
    d = 0.01 * gl
    return 0.01 * np.linalg.norm(wl) / (np.linalg.norm(d) + 1e-20) * d
  v = jax.tree.map(v_of, w, g0)
  g1 = jax.grad(loss)(jax.tree.map(jnp.add, w, v))
  expected = jax.tree.map(lambda a, b: a - 0.1 * b, w, g1)
  for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The optimizer state is the one of a plain step with that gradient.
  _, opt_ref = tx.update(g1, tx.init(w), w)
  for a, b in zip(jax.tree.leaves(new["opt"]), jax.tree.leaves(opt_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
  assert float(m["awp_norm"]) > 0


@pytest.mark.parametrize("mode", ["nonmax_shuffle", "nonmax_mean", "nonmax_template"])
def test_nonmax_manipulations_keep_the_max_logit(mode):
  from robust_distill.analysis import logits as la  # pylint: disable=import-outside-toplevel
  z = jnp.asarray(np.random.RandomState(0).randn(8, 6), jnp.float32)
  out = np.asarray(la.manipulate_nonmax(z, mode, jax.random.key(0)))
  zn = np.asarray(z)
  top = zn.argmax(-1)
  np.testing.assert_array_equal(out.argmax(-1), top)
  np.testing.assert_allclose(out.max(-1), zn.max(-1))
  rest = lambda a, i: np.delete(a[i], top[i])
  for i in range(8):
    if mode == "nonmax_shuffle":
      np.testing.assert_allclose(np.sort(rest(out, i)), np.sort(rest(zn, i)), rtol=1e-6)
    elif mode == "nonmax_mean":
      np.testing.assert_allclose(rest(out, i), rest(zn, i).mean(), rtol=1e-5)
    else:  # same ranking of the non-max classes, batch-average sorted gaps below the max
      np.testing.assert_array_equal(np.argsort(rest(out, i)), np.argsort(rest(zn, i)))
      template = np.mean([np.sort(zn[j].max() - rest(zn, j)) for j in range(8)], 0)
      np.testing.assert_allclose(np.sort(zn[i].max() - rest(out, i)), template, rtol=1e-5,
                                 atol=1e-6)


def test_logit_analysis_writes_plots_and_report(tmp_path):
  from robust_distill.analysis import logits as la  # pylint: disable=import-outside-toplevel
  r = np.random.RandomState(1)
  y = r.randint(0, 10, 64)
  std = r.randn(64, 10) * 3
  rob = std * 0.3 + r.randn(64, 10) * 0.5
  sa, sb = la.logit_stats(std, y), la.logit_stats(rob, y)
  np.testing.assert_allclose(sa["gap"], np.sort(std, -1)[:, -1] - np.sort(std, -1)[:, -2])
  cmp = la.write_report(str(tmp_path), ("standard", "robust"), (sa, sb),
                        images=r.rand(64, 28, 28, 1), labels=y, k=8)
  for f in ("report.md", "hist_max_logit.png", "hist_gap.png", "hist_confidence.png",
            "grid_a_high_b_low.png", "grid_b_high_a_low.png"):
    assert (tmp_path / f).stat().st_size > 0, f
  assert -1.0 <= cmp["spearman_confidence"] <= 1.0 and len(cmp["a_high_b_low"]) == 8
  assert cmp["summary"]["a"]["max_logit_mean"] > cmp["summary"]["b"]["max_logit_mean"]


def test_results_table_runs_resumes_and_writes_markdown(tmp_path, capsys):
  from robust_distill.experiments import table  # pylint: disable=import-outside-toplevel
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


# --- AGKD-BML ----------------------------------------------------------------------------------

def _agkd_inputs(seed=0, b=6, c=5):
  """Student/teacher logits, 'last' feature maps and embeddings for the four inputs."""
  r = np.random.RandomState(seed)
  f = lambda *shape: r.randn(*shape).astype(np.float32)
  student = {w: {"logits": f(b, c), "last": f(b, 3, 3, 4), "embedding": f(b, 7)}
             for w in ("clean", "adv", "bwd")}
  teacher = {w: {"logits": f(b, c), "last": f(b, 3, 3, 4)} for w in ("clean", "neg")}
  y = r.randint(0, c, b)
  valid = np.array([True] * (b - 1) + [False])
  return student, teacher, y, valid


def _agkd_ctx(loss_cfg, student, teacher, y, valid):
  """A context whose 'models' look their outputs up by input name."""
  as_x = lambda w: jnp.full((1,), ["clean", "adv", "bwd", "neg"].index(w), jnp.float32)
  name = lambda x: ["clean", "adv", "bwd", "neg"][int(x[0])]

  def apply(p, s, x, train, features=False):
    out = {k: jnp.asarray(v) for k, v in student[name(x)].items()}
    return ((out["logits"], out) if features else out["logits"]), s

  def t_fn(x, features=False):
    out = {k: jnp.asarray(v) for k, v in teacher[name(x)].items()}
    return (out["logits"], out) if features else out["logits"]

  return step_lib.Context(apply, None, {}, as_x("clean"), as_x("adv"), jnp.asarray(y),
                          jnp.asarray(teacher["clean"]["logits"]), loss_cfg, teacher_fn=t_fn,
                          x_neg=as_x("neg"), x_bwd=as_x("bwd"), neg_valid=jnp.asarray(valid))


def test_agkd_bml_total_matches_the_official_formula():
  """The agkd_bml config's loss against a NumPy transcription of AGKD-BML's main.py."""
  student, teacher, y, valid = _agkd_inputs()
  cfg = _config("agkd_bml").student.loss
  ctx = _agkd_ctx(cfg, student, teacher, y, valid)
  terms = step_lib.active_terms(cfg)
  got = float(sum(w * jnp.mean(step_lib.LOSS_TERMS[k](ctx)) for k, w in terms.items()))

  b, c = y.shape[0], 5
  pa, pn = _softmax(student["adv"]["logits"]), _softmax(student["clean"]["logits"])
  onehot = np.eye(c)[y]
  q = onehot * 0.5 + (1 - onehot) * 0.5 / (c - 1)  # label smoothing 0.5
  ls_ce = -(q * np.log(pa)).sum(-1).mean()
  y_other = np.where(onehot.astype(bool), -np.inf, pa).argmax(-1)
  margin = -np.log(1.0001 - pa[np.arange(b), y_other] + 1e-12).mean()
  kl = (pn * (np.log(pn) - np.log(pa + 1e-12))).sum(-1) * (1.0000001 - pn[np.arange(b), y])

  def am(f):
    a = f.sum(-1).reshape(b, -1)
    return (a - a.min(1, keepdims=True)) / (a.max(1, keepdims=True) - a.min(1, keepdims=True))

  at_fwd = np.abs(am(student["adv"]["last"]) - am(teacher["clean"]["last"])).mean(-1)
  at_bwd = np.abs(am(student["bwd"]["last"]) - am(teacher["neg"]["last"])).mean(-1) * valid
  a, p, n = (student[w]["embedding"] for w in ("adv", "clean", "bwd"))
  d = lambda u, v: 1 - np.abs((u * v).sum(-1)) / (np.linalg.norm(u, axis=-1)
                                                  * np.linalg.norm(v, axis=-1))
  trip = (np.maximum(0, 0.03 + d(a, p) - d(a, n))
          + 0.001 * ((a**2).mean(-1) + (p**2).mean(-1) + (n**2).mean(-1))) * valid
  ref = ls_ce + margin + 6 * kl.mean() + at_fwd.mean() + at_bwd.mean() + 2 * trip.mean()
  np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.parametrize("source", ["pool", "batch"])
def test_negatives_are_clean_images_of_the_requested_class(source):
  r = np.random.default_rng(0)
  y = jnp.asarray(np.repeat(np.arange(4), 4))  # 16 examples, 4 of each of 4 classes
  x = jnp.asarray(y, jnp.float32)[:, None, None, None] + jnp.zeros((16, 2, 2, 1))
  pool = jnp.arange(5)[:, None, None, None, None] + jnp.zeros((5, 3, 2, 2, 1))  # image = class
  classes = jnp.asarray(r.integers(0, 4, 16))
  x2, valid = step_lib.select_negatives(source, jax.random.key(0), classes, x, y, pool)
  np.testing.assert_array_equal(np.asarray(x2)[:, 0, 0, 0], np.asarray(classes))
  assert bool(valid.all())
  if source == "batch":  # a class absent from the batch is masked out
    x2, valid = step_lib.select_negatives(source, jax.random.key(0), jnp.full((16,), 4), x, y)
    assert not bool(valid.any())


def test_backward_example_moves_the_negative_towards_the_true_class():
  model = models.build("small_cnn", width=8, hidden=32)
  g, p, st = nnx.split(model, nnx.Param, nnx.BatchStat)
  apply = step_lib.make_apply(g)
  s = C.stage(loss=dict(ce_adv=1.0), attack_cfg=C.attack(eps=0.1, step_size=0.025, steps=10,
                                                          objective="ce_confusing"))
  r = np.random.default_rng(3)
  x2 = jnp.asarray(r.uniform(size=(16, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(r.integers(0, 10, 16))
  atk = step_lib.attack_fn(s, apply, p, st)
  x2_adv = atk(x2, y, jax.random.key(0), objective="ce_targeted", target=y)
  logp = lambda v: jnp.take_along_axis(jax.nn.log_softmax(apply(p, st, v, train=False)[0]),
                                       y[:, None], -1).mean()
  assert float(logp(x2_adv)) > float(logp(x2))
  assert float(jnp.max(jnp.abs(x2_adv - x2))) <= 0.1 + 1e-6


def test_class_pool_in_the_input_pipeline():
  from robust_distill.data import pipeline  # pylint: disable=import-outside-toplevel
  data = pipeline.mock_split("train", n=200)
  idx = np.arange(150)
  kw = dict(global_batch=16, seed=3, class_pool=4, num_classes=10)
  b0 = next(pipeline.train_iterator(data, idx, **kw))
  assert b0["pool_image"].shape == (10, 4, 28, 28, 1)
  # Every pool image is a training image (of idx) of its class.
  flat = data["image"][idx].reshape(150, -1)
  for c in range(10):
    for k in range(4):
      rows = np.flatnonzero((flat == b0["pool_image"][c, k].reshape(-1)).all(-1))
      assert rows.size and (data["label"][idx][rows] == c).all()
  # Identical on every host, while the examples are split between hosts.
  b1 = next(pipeline.train_iterator(data, idx, host_rows=slice(8, 16), **kw))
  np.testing.assert_array_equal(b0["pool_image"], b1["pool_image"])
  assert b1["image"].shape[0] == 8


def test_student_initialised_from_the_teacher():
  from robust_distill.train import loop  # pylint: disable=import-outside-toplevel
  tx = step_lib.make_optimizer(C.stage().optim, 10)
  _, state = step_lib.init_state(models.build("small_cnn", width=8, hidden=32), tx)
  tg, tp, ts = nnx.split(models.build("small_cnn", seed=5, width=8, hidden=32), nnx.Param,
                         nnx.BatchStat)
  new = loop._init_from(state, "teacher", {"graphdef": tg, "params": tp, "stats": ts}, tx)  # pylint: disable=protected-access
  for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(tp)):
    np.testing.assert_array_equal(a, b)
  _, op, os_ = nnx.split(models.build("small_cnn", seed=5, width=16, hidden=32), nnx.Param,
                         nnx.BatchStat)
  with pytest.raises(ValueError, match="different architectures"):
    loop._init_from(state, "teacher", {"graphdef": tg, "params": op, "stats": os_}, tx)  # pylint: disable=protected-access
