"""CIFAR-100 at the papers' settings, for any method of the table: ``configs/cifar100.py:METHOD``
(default ``ltd_trades``). As CIFAR-10 (eps 8/255, 10-step attacks, crop + flip, TRADES
WRN-34-10 teacher, ResNet-18 students, WRN-34-10 for LTD) with the papers' CIFAR-100
differences: ARD's batch of 256, AdaAD's batchmean KL.

    python -m robust_distill.main --config=configs/cifar100.py:ltd_trades --workdir=runs/c100_ltd
    python -m robust_distill.main --config=configs/cifar100.py:adaad --workdir=/tmp/c100 \
        --config.dataset=mock --config.steps=2      # smoke run here

Number to reproduce: LTD 31.13% AutoAttack robust accuracy on CIFAR-100 (the paper's
abstract; RobustBench Chen2021LTD_WRN34_10 for CIFAR-100, WRN-34-10 with sub_block1).
"""

from robust_distill import methods

get_config = methods.setting_fn("cifar100", default="ltd_trades")
