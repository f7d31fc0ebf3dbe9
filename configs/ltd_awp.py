"""LTD with AWP: ltd_trades plus AWP (gamma 5e-3, proxy lr 0.1, warm-up 10 epochs), as in
TRADES-AWP.

RobustBench Chen2021LTD_WRN34_10: 85.21 clean / 56.94 AutoAttack (the paper's best setting).

    python -m robust_distill.main --config=configs/ltd_awp.py --workdir=runs/ltd_awp  # CIFAR-10
    python -m robust_distill.main --config=configs/ltd_awp.py:fmnist --workdir=runs/ltd_awp  # here
"""

from robust_distill import methods


def get_config(arg: str = ""):
  c = methods.make(
      arg,
      loss=dict(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=0.25),
      objective="kl_self",
      init="normal",
      teacher="precomputed",
      awp=dict(gamma=5e-3, proxy_lr=0.1, warmup_epochs=10.0),
      cifar=dict(model="wrn34_10", epochs=200, lr=0.1, weight_decay=5e-4, decay_epochs=(100, 150)))
  if arg:  # warm-up scaled to the short run (10/200 of training)
    c.student.awp.warmup_epochs = 0.05 * c.student.optim.epochs
  if arg:
    c.student.loss.trades_kl = 4.0  # the quickstart's validated student beta
  return c
