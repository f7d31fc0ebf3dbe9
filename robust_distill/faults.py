"""Fault injection for the preemption tests: ``point(name)`` kills this process with SIGKILL
(no clean-up, as a scheduler's preemption) when the environment variable
``ROBUST_DISTILL_KILL_AT`` equals ``name``. Unset, it costs one dictionary look-up.

Names: ``<stage>:step:<n>`` (after step n of a training stage), ``<stage>:save:<kind>:<step>:
committed`` (a checkpoint written, its manifest not yet), ``<stage>:save:<kind>:<step>:done``
(right after a checkpoint and its manifest), ``precompute:chunk:<i>``, ``autoattack:batch:<j>``.
"""

import os
import signal

ENV = "ROBUST_DISTILL_KILL_AT"


def point(name: str) -> None:
  if os.environ.get(ENV) == name:
    os.kill(os.getpid(), signal.SIGKILL)
