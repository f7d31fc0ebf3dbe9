"""LTD with AWP: ltd_trades plus AWP (gamma 5e-3, proxy lr 0.1, warm-up 10 epochs), as in
TRADES-AWP.

RobustBench Chen2021LTD_WRN34_10: 85.21 clean / 56.94 AutoAttack (the paper's best setting).

    python -m robust_distill.main --config=configs/ltd_awp.py --workdir=runs/ltd_awp  # CIFAR-10
    python -m robust_distill.main --config=configs/ltd_awp.py:fmnist --workdir=runs/ltd_awp  # here
"""

from robust_distill import settings


def get_config(arg: str = ""):
  """The ltd_awp config of setting ``arg`` (see ``robust_distill.settings``)."""
  c = settings.base(arg, teacher="precomputed")
  s = c.student
  s.loss.update(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=0.25)
  s.attack.update(objective="kl_self", init="normal")
  s.awp.update(gamma=5e-3, proxy_lr=0.1, warmup_epochs=10.0)
  if settings.is_paper(arg):
    s.model = "wrn34_10"
    s.optim.update(epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150))
  else:
    s.loss.trades_kl = 4.0  # as ltd_trades
    s.awp.warmup_epochs = 0.05 * s.optim.epochs  # 10 of 200 epochs, scaled to the run
  return settings.finish(c, arg)
