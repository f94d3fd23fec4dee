"""Reaching Ray: whether it is installed, joining a cluster or starting a local one, telling a lost worker from a
failed unit. Apart from ``ray_worker`` (which runs the families) so that what only schedules processes on a cluster
(the ablation schedule of learned compressors) needs none of the engine. Ray is imported inside the functions.
"""

from __future__ import annotations

import os
import re

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
        if address != "auto":
            _answers(address)  # Ray itself retries an address nobody answers at for minutes, printing as it goes
        try:
            ray.init(address=address, log_to_driver=False, logging_level="warning")
        except ConnectionError as err:
            if address == "auto":
                raise RayUnreachable("--ray auto: this machine has not joined a Ray cluster (`ray start --head` starts "
                                     "one here, `ray start --address HEAD:6379` joins one), or give the head's "
                                     "address as --ray HOST:PORT") from None
            raise RayUnreachable(f"--ray {address}: {_first_line(err)}") from None
    else:  # enough CPU slots for the CPU workers a machine without GPUs runs
        ray.init(num_cpus=max(workers or 1, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    return ray, True


# "auto", or a head node's HOST:PORT (a Ray client address ray://HOST:PORT too): what ray.init(address=...) takes.
_ADDRESS = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def address_problem(address: str) -> str | None:
    """Why ``address`` is no Ray cluster address (None when it is one): checked where a plan or a flag is read, so
    --dry-run and the app's Setup say it too, before anything connects."""
    m = _ADDRESS.fullmatch(address.strip())
    if address.strip() == "auto" or (m and 1 <= int(m.group(2)) <= 65535):
        return None
    return f"expected auto or the head's HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}"


class RayUnreachable(RuntimeError):
    """The Ray cluster asked for cannot be reached (said in one line naming --ray)."""


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _answers(address: str, timeout: float = 5.0) -> None:
    """Raise RayUnreachable unless something accepts a connection at ``address`` (HOST:PORT, or ray://HOST:PORT for
    Ray Client) within ``timeout`` seconds."""
    import socket

    bad = address_problem(address)
    if bad:
        raise RayUnreachable(f"--ray {address}: {bad}")
    host, port = _ADDRESS.fullmatch(address.strip()).groups()
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise RayUnreachable(f"--ray {address}: nothing answers at {host}:{port} ({why}); is the cluster's head running "
                             "there (`ray start --head` prints its address)?") from None


def _fault_handler_on_a_real_file() -> None:
    """``ray.init`` turns on ``faulthandler`` for ``sys.stderr`` unless it is on, and fails when that stream has no
    file descriptor (the terminal app's captured stderr says -1): turn it on here for the process's own stderr."""
    import faulthandler
    import sys

    if faulthandler.is_enabled():
        return
    try:
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
