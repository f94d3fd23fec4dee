"""Reaching Ray: whether it is installed, joining a cluster or starting a local one, telling a lost worker from a
failed unit. Apart from ``ray_worker`` (which runs the families) so that what only schedules processes on a cluster
(the ablation schedule of learned compressors) needs none of the engine. Ray is imported inside the functions.
"""

from __future__ import annotations

import os

RAY_MISSING = ("--workers/--ray and a plan's \"execution\" need Ray, which is not installed: "
               "pip install 'compression-workbench[ray]' (or WORKBENCH_RAY=1 scripts/setup.sh)")


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def connect(address: str | None, workers: int | None):
    """Ray, initialised: the cluster at ``address`` ("auto" or host:port), else a local Ray for this run.

    Returns (ray, started_here). A Ray already initialised in this process (a test's) is used as it is."""
    import ray

    if ray.is_initialized():
        return ray, False
    _fault_handler_on_a_real_file()
    if address:
        ray.init(address=address, log_to_driver=False, logging_level="warning")
    else:  # enough CPU slots for the CPU workers a machine without GPUs runs
        ray.init(num_cpus=max(workers or 1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    return ray, True


def _fault_handler_on_a_real_file() -> None:
    """``ray.init`` turns on ``faulthandler`` for ``sys.stderr`` unless it is on, and fails when that stream has no
    file descriptor (the terminal app's captured stderr says -1): turn it on here for the process's own stderr."""
    import faulthandler
    import sys

    if faulthandler.is_enabled():
        return
    try:
        sys.stderr.fileno()
        valid = sys.stderr.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        valid = False
    if not valid and sys.__stderr__ is not None:
        faulthandler.enable(file=sys.__stderr__, all_threads=False)


def is_worker_lost(err: BaseException) -> bool:
    """True when the error says the worker (its process, its node) is gone, not that the unit failed."""
    import ray.exceptions as rex

    lost = tuple(getattr(rex, name) for name in ("RayActorError", "ActorDiedError", "ActorUnavailableError",
                                                 "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError",
                                                 "ObjectLostError") if hasattr(rex, name))
    return isinstance(err, lost)
