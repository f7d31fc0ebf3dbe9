"""LTD on ImageNet: ResNet-50 student, robust ResNet-50 teacher, L-inf eps 4/255.

The paper reports 42.08% robust accuracy on ImageNet (the abstract of arXiv 2111.02331; the
threat model is [INFERRED] to be RobustBench's ImageNet L-inf 4/255 with AutoAttack on 5,000
validation images). No training code is public, so the settings are [INFERRED] from the usual
ImageNet adversarial-training recipe (Salman et al. 2020; TRADES-style objective as LTD on
CIFAR): global batch 512, SGD lr 0.2 (0.1 per 256), momentum 0.9, wd 1e-4, 90 epochs with
decays at 30 and 60, 3-step training attack of 4/255 x 2/3, random-resized crop + flip. The
teacher is precomputed on replayed views (FKD-style): each example's crop and flip are a
function of (seed, view, id), the precompute stage runs the teacher once on every view the
student will see (one per epoch: data.views=0), and stores its top 10 logits per view in
float16 with the rest's log-sum-exp (teacher.topk; 44 bytes per example and view, about 5 GB
for 90 views of ImageNet). --config.teacher.source=online runs the teacher in every step
instead. The teacher is a TRADES ResNet-50 trained by the teacher stage, a finished stage
reused with --config.teacher.workdir, or a RobustBench ImageNet model imported with
robust_distill.models.from_torch.

TPU pod (README "Launching"; the ImageNet TFDS data prepared once in gs://BUCKET/tfds):

    SLICE=rd-v4-64 ZONE=us-central2-b ACCEL=v4-64 WORKDIR=gs://BUCKET/runs/imagenet_ltd \
      launch/tpu_pod.sh --config=configs/imagenet_ltd.py --config.data.data_dir=gs://BUCKET/tfds

Smoke run on this machine (synthetic 224x224 data, 2 steps per stage):

    python -m robust_distill.main --config=configs/imagenet_ltd.py --workdir=/tmp/inet \
        --config.dataset=mock --config.steps=2
"""

from robust_distill import config as C

EPS = 4 / 255


def get_config(arg: str = ""):
  if arg:
    raise ValueError(f"configs/imagenet_ltd.py takes no argument, got {arg!r}")
  c = C.base()
  c.dataset = c.data.mock_like = "imagenet2012"
  c.data.augment = "rrc_flip"
  c.data.val_size = 10000  # held out of the training split for model selection
  # JPEG decoding and random-resized crops in 16 worker processes per host (docs/launching.md:
  # the projected step rate of a 4-chip v4 host needs about 5 such cores; a smoke run uses 2).
  c.data.workers = 16
  atk = dict(eps=EPS, step_size=EPS * 2 / 3, steps=3, objective="kl_self", init="normal")
  optim = dict(
    epochs=90,
    batch_size=512,
    lr=0.2,
    weight_decay=1e-4,
    schedule="piecewise",
    decay_epochs=(30, 60),
  )
  c.teacher = C.stage(
    model="resnet50", loss=dict(ce_clean=1.0, trades_kl=6.0), attack_cfg=C.attack(**atk), **optim
  )
  c.teacher.source = "precomputed"  # replayed views (data.views, teacher.topk)
  c.teacher.flip_aware = False
  c.teacher.workdir = ""
  c.teacher.topk = 10
  c.data.views = 0  # one view per planned epoch
  c.student = C.stage(
    model="resnet50",
    loss=dict(kd_clean=1.0, trades_kl=6.0, kd_teacher_temperature=0.25),
    attack_cfg=C.attack(**atk),
    temperature=1.0,
    **optim,
  )
  for s in (c.teacher, c.student):
    s.val_every_epochs = 5.0
    # bf16 compute (float32 parameters, optimizer state, logits and losses); remat is off: set
    # --config.student.model_kwargs.remat=dots (or nothing) when activations do not fit.
    s.model_kwargs.update(dtype="bfloat16", remat="none")
  c.stages = "teacher,precompute,student,eval"
  c.eval.update(
    eps=EPS, batch_size=512, n=-1, val_n=2048, autoattack_n=5000, autoattack_batch_size=512
  )
  c.checkpoint.every_steps = 1000
  return c
