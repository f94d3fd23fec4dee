"""What a run reports while it goes (both loops: the runner's and the workers')."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Event:
    """Progress report. kind: run-started, model-loading, model-loaded, cell-started, progress,
    cell-finished, log, run-finished; with Ray workers also worker (a worker's state: ready, measuring,
    measured, lost, starting). ``data`` is JSON-able."""

    kind: str
    message: str = ""
    data: dict = field(default_factory=dict)


EventHandler = Callable[[Event], None]
