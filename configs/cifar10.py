"""CIFAR-10 at the papers' settings, for any method of the table: ``configs/cifar10.py:METHOD``
(default ``ltd_trades``; the same configs as ``configs/METHOD.py``). L-inf eps 8/255, 10-step
training attacks of 2/255, crop + flip, TRADES WRN-34-10 teacher (online), ResNet-18 students
(WRN-34-10 for LTD, WRN-28-10 for AGKD-BML). An accelerator job; see README "Launching".

    python -m robust_distill.main --config=configs/cifar10.py:ltd_trades --workdir=runs/c10_ltd
    # Smoke run of the same config on synthetic CIFAR-shaped data, on this machine:
    python -m robust_distill.main --config=configs/cifar10.py:rslad --workdir=/tmp/c10 \
        --config.dataset=mock --config.steps=2

Numbers to reproduce (AutoAttack, full test set; shared/docs/evaluation.md 7.3 and the
RobustBench entries, second-hand): LTD WRN-34-10 85.21 clean / 56.94 AA (RobustBench
Chen2021LTD_WRN34_10; 58.19 AA with WRN-34-20 + AWP in the paper's abstract); ResNet-18
students: PGD-AT 82.78 / 44.63, RSLAD and AdaAD about 52-53 AA (AdaAD 84.74 / 52.79),
IAD 84.33 / 50.09, ARD 85.04 / 49.49.
"""

from robust_distill import methods

get_config = methods.setting_fn("cifar10", default="ltd_trades")
