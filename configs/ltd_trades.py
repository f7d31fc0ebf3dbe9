"""LTD with TRADES (Chen & Lee, arXiv 2111.02331): TRADES with its clean CE replaced by
KL(softmax(T(x)/tau_T) || softmax(S(x))) at a low teacher temperature tau_T = 0.25 (inferred;
see configs/fmnist_ltd.py for the choices); beta 6 on CIFAR-10.

RobustBench Chen2021LTD_WRN34_10 (LTD with AWP, CIFAR-10): 85.21 clean / 56.94 AutoAttack.

    # CIFAR-10 (an accelerator job), then the Fashion-MNIST variant that runs on a CPU:
    python -m robust_distill.main --config=configs/ltd_trades.py --workdir=runs/ltd_trades
    python -m robust_distill.main --config=configs/ltd_trades.py:fmnist --workdir=runs/ltd_trades
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The ltd_trades config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="precomputed")
  s = c.student
  s.loss.update(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=0.25)
  s.attack.update(objective="kl_self", init="normal")
  if settings.is_paper(arg):
    s.model = "wrn34_10"
    s.optim.update(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
  else:
    s.loss.trades_kl = 4.0  # chosen on the validation split (configs/fmnist_ltd.py)
  return settings.finish(c, arg)
