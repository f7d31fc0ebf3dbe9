"""The optimizer of a training stage, from its ``optim`` config block."""

import optax

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "piecewise")


def make_optimizer(optim_cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum and PyTorch-style (coupled) weight decay, or Adam (coupled decay too);
  piecewise-constant, cosine or constant learning rate."""
  total = max(int(optim_cfg.epochs * steps_per_epoch), 1)
  if optim_cfg.schedule == "piecewise":
    bounds = {
      int(round(e * steps_per_epoch)): optim_cfg.decay_factor for e in optim_cfg.decay_epochs
    }
    lr = optax.piecewise_constant_schedule(optim_cfg.lr, bounds)
  elif optim_cfg.schedule == "cosine":
    lr = optax.cosine_decay_schedule(optim_cfg.lr, total)
  elif optim_cfg.schedule == "constant":
    lr = optax.constant_schedule(optim_cfg.lr)
  else:
    raise ValueError(f"Unknown lr schedule {optim_cfg.schedule!r}; valid: {list(SCHEDULES)}")
  name = optim_cfg.get("name", "sgd")
  if name == "sgd":
    opt = optax.sgd(lr, momentum=optim_cfg.momentum or None, nesterov=bool(optim_cfg.nesterov))
  elif name == "adam":
    opt = optax.adam(lr)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}")
  return optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay), opt)
