"""Tiny ImageNet (64x64, 200 classes) at DGAD's setting: ``configs/tiny_imagenet.py:METHOD``
(default ``dgad``). From DGAD's ``main_tiny.py``: ResNet-18 student, TRADES PreAct-ResNet-18
teacher, eps 8/255, 10 steps of 2/255, RandomCrop(64, pad 4) + flip, SGD 0.1, wd 5e-4, batch
128, 200 epochs with decays at 100 and 150; the official val split is the test split. The data
come from tiny-imagenet-200.zip in --config.data.manual_dir (robust_distill/data/tiny_imagenet.py).

    python -m robust_distill.main --config=configs/tiny_imagenet.py:dgad --workdir=runs/tiny_dgad \
        --config.data.manual_dir=/data/tiny-imagenet
    python -m robust_distill.main --config=configs/tiny_imagenet.py --workdir=/tmp/tiny \
        --config.dataset=mock --config.steps=2      # smoke run here

Number to reproduce: the DGAD paper's Tiny ImageNet table (ResNet-18 student). It is not quoted
here: no copy of that table could be read while writing this config, so compare against the
paper itself.
"""

from robust_distill import methods

get_config = methods.setting_fn("tiny_imagenet", default="dgad")
