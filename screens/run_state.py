"""What the Progress view shows about a run: written by the app's handlers on the main thread only.

Times are read from the app's clock (``time.monotonic`` unless a test injects another), not from the
runner's events: the elapsed time then moves every second from the start of the run, model loading
included, and the ETA counts down between samples. The ETA is the pace of the samples finished in this
run (model loading and samples done before a resume left out) applied to the samples left.
"""

from __future__ import annotations

from collections import Counter, deque

from workbench import figures

ACTIVE = ("running", "cancelling")


class RunState:
    def __init__(self, status: str = "idle"):
        self.status = status  # idle | running | cancelling | finished | cancelled | failed
        self.opened = False  # the state of a session opened from a file (no run in this app)
        self.done = self.total = 0  # samples accounted for / in the plan (figures.sample_counts)
        self.done_at_start = 0  # samples a resumed session already had
        self.started_at: float | None = None  # app clock, seconds
        self.loaded_at: float | None = None  # when the model was loaded (the pace is measured from here)
        self.ended_at: float | None = None
        self.sample_at: float | None = None  # when ``done`` last grew
        self.cell: str | None = None  # key of the cell being computed
        self.message = ""
        self.model = ""  # what the model line says: loading …, loaded …, could not be loaded
        self.failure: str | None = None  # the whole message of a run that failed
        self.log: deque[tuple[str, str]] = deque(maxlen=200)  # (severity, text)
        self.delivered: Counter[str] = Counter()  # run events handled, by kind (the throttle's effect)
        self.api: dict | None = None  # a remote evaluator's counters (workbench.api.client.Stats), when there is one
        self.live: dict[str, dict] = {}  # decoding: each method's current sample ({"cell", "rate", "curve"})
        self.live_version = 0  # bumped by each live report: the budget plot redraws when it moved
        self.workers: dict[int, dict] = {}  # Ray workers: each one's last "worker" event (device, state, unit, pace)

    @classmethod
    def started(cls, cells, now: float) -> "RunState":
        state = cls("running")
        state.done, state.total = figures.sample_counts(cells)
        state.done_at_start = state.done
        state.started_at = now
        return state

    @classmethod
    def of_session(cls, session) -> "RunState":
        """A session opened from a file: its own status and counts, no clock."""
        state = cls(session.status if session.status in ("finished", "cancelled", "failed") else "idle")
        state.opened = True
        state.done, state.total = figures.sample_counts(session.cells.values())
        return state

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def samples(self, done: int, total: int, now: float) -> None:
        """A progress report: ``done`` of ``total`` samples accounted for."""
        if done != self.done:
            self.sample_at = now
        self.done, self.total = done, total

    def end(self, status: str, now: float) -> None:
        self.status, self.ended_at = status, now

    def elapsed(self, now: float) -> float | None:
        """Seconds since the run started (until it ended); None for an opened session or before a run."""
        if self.started_at is None:
            return None
        return (self.ended_at if self.ended_at is not None else now) - self.started_at

    def eta(self, now: float) -> float | None:
        """Seconds left: the pace of this run's finished samples (seconds per sample, from the model load to the
        last finished sample) times the samples left, less the time since that sample (so it counts down).
        None when nothing runs or no sample has finished in this run."""
        measured = self.done - self.done_at_start
        since = self.loaded_at if self.loaded_at is not None else self.started_at
        if not self.active or measured <= 0 or since is None or self.sample_at is None or self.done >= self.total:
            return None
        pace = max(self.sample_at - since, 0.0) / measured
        return max(pace * (self.total - self.done) - (now - self.sample_at), 0.0)
