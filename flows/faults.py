"""Named kill points, so the crash-recovery test can stop a flow at an exact place.

A run started with FACESURV_KILL_AT=<point>[#<n>] ends its own process with os._exit (no
cleanup, no finally blocks, like a power cut or SIGKILL) the n-th time (default: first)
it reaches `checkpoint(<point>)`. Without the variable a checkpoint costs a dict lookup.
"""

from __future__ import annotations

import os
import sys

KILL_ENV = "FACESURV_KILL_AT"
KILL_EXIT_CODE = 77
_seen: dict[str, int] = {}


def checkpoint(point: str) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, _, nth = spec.partition("#")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] >= int(nth or 1):
        sys.stderr.write(f"facesurv: killed at {point} (#{_seen[point]}) by {KILL_ENV}\n")
        sys.stderr.flush()
        os._exit(KILL_EXIT_CODE)
