"""AutoAttack evaluation of a trained checkpoint (see ``robust_distill.eval.autoattack``)::

    python -m robust_distill.eval --workdir=DIR [--attacks=standard] [--eps=0.1] \
        [--start=0] [--n=1000] [--host_devices=2]

Writes ``DIR/eval_autoattack.json`` (or ``--out``) and prints the table. A killed run resumes
where it stopped when rerun with the same flags.
"""

from robust_distill import compile_cache, cpu_devices

cpu_devices.configure_from_argv()  # before JAX is imported: XLA reads the flag once
compile_cache.configure()  # likewise: JAX reads its cache settings at import

from absl import app, flags, logging

from robust_distill.attacks import autoattack
from robust_distill.eval.autoattack import Stopped, evaluate
from robust_distill import errors, parallel

flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoint.")
flags.DEFINE_string("stage", "", "Stage to evaluate: student (default when trained) or teacher.")
flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint of the stage.")
flags.DEFINE_string(
  "attacks",
  "standard",
  "standard, rand, or a comma-separated list of apgd-ce, apgd-dlr, apgd-t, fab-t, square.",
)
flags.DEFINE_float("eps", -1.0, "Radius of the threat model (default: the config's eval eps).")
flags.DEFINE_string("norm", "", "linf or l2 (default: the stage's attack norm).")
flags.DEFINE_integer("start", 0, "First test point evaluated.")
flags.DEFINE_integer("n", 0, "Number of test points from --start (0: to the end).")
flags.DEFINE_integer(
  "batch_size", 0, "Global batch size (default: 256, rounded up to 32 x devices)."
)
flags.DEFINE_integer("seed", 0, "Base seed of the attacks' random keys.")
flags.DEFINE_integer(
  cpu_devices.FLAG[2:],
  cpu_devices.DEFAULT_HOST_DEVICES,
  "CPU host devices (read before JAX starts; no effect on GPU/TPU).",
)
flags.DEFINE_bool("checks", True, "Run the honesty checks.")
flags.DEFINE_integer("check_n", 256, "Points used by the honesty checks.")
flags.DEFINE_string("out", "", "Output JSON (default: WORKDIR/eval_autoattack.json).")
flags.DEFINE_bool("fresh", False, "Ignore saved per-point results and start over.")
flags.DEFINE_integer(
  "stop_after_batches",
  0,
  "Testing aid: exit with status 3 after this many attack batches (simulates a killed run).",
)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize (multi-host).")
flags.DEFINE_multi_string(
  "opt",
  [],
  "Attack option overrides KEY=VALUE (n_iter, "
  "n_target_classes, n_queries, fab_iter, p_init, rho, eot_iter, unroll, "
  "chunk, driver=auto|host|device); tests use fewer iterations.",
)
flags.DEFINE_bool("verbose", False, "On an error, show the traceback too.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  parallel.initialize_distributed(FLAGS.distributed)
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  try:
    opts = autoattack.parse_opts(",".join(FLAGS.opt))
    evaluate(
      FLAGS.workdir,
      stage=FLAGS.stage,
      which=FLAGS.which,
      attacks=FLAGS.attacks,
      eps=FLAGS.eps,
      norm=FLAGS.norm,
      start=FLAGS.start,
      n=FLAGS.n,
      batch_size=FLAGS.batch_size,
      seed=FLAGS.seed,
      checks=FLAGS.checks,
      check_n=FLAGS.check_n,
      out=FLAGS.out,
      fresh=FLAGS.fresh,
      opts=opts,
      stop_after_batches=FLAGS.stop_after_batches,
      log=lambda s: print(s, flush=True),
    )
  except Stopped as e:
    print(e, flush=True)
    raise SystemExit(3) from None
  except errors.EXPECTED as e:
    if FLAGS.verbose:
      raise
    raise SystemExit(f"error: {errors.one_line(e)}") from None


if __name__ == "__main__":
  app.run(main)
