"""Ablation grids of learned compressors: one training plan per (architecture, rate), from a grid description.

A grid is a JSON document (a shipped one in ``presets/train/``, or a file) with a ``base`` training plan, the
``architectures`` to train and the rates, given either as ``rates`` (fraction of context positions kept, the
workbench's one meaning of rate) or as ``soft_tokens`` (M soft vectors from the base plan's ``context_tokens``:
rate = M / context_tokens, seed 002's way of saying it). :func:`expand` turns it into the runs, each a complete
training plan that ``workbench train CONFIG.json`` reads. Imports neither torch nor the training code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from workbench import jsonio

GRID_FIELDS = ("name", "description", "base", "architectures", "rates", "soft_tokens")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a run's name is its folder under the data directory


class GridError(ValueError):
    """A grid that cannot be used; ``str()`` is one line naming the file and the field."""


@dataclass(frozen=True)
class AblationRun:
    name: str  # unique in the grid; the run's folder under the data directory
    architecture: str
    rate: float  # fraction of context positions kept
    soft_tokens: int | None  # M, when the grid gave the rates as soft vectors
    config: dict  # the complete training plan of this run (JSON-able)


def is_grid(data) -> bool:
    """True for a grid description (as opposed to one training plan): the Train view lists only plans."""
    return isinstance(data, dict) and "architectures" in data and "base" in data


def train_preset_dir() -> Path:
    """The shipped training plans and grids (``presets/train/``)."""
    from importlib import resources

    try:
        return Path(str(resources.files("workbench.presets").joinpath("train")))
    except ModuleNotFoundError:  # a source tree that was never installed
        return Path(__file__).resolve().parents[2] / "presets" / "train"


def load_grid(name_or_path: str) -> tuple[dict, str]:
    """(the grid's JSON, its source for messages): a shipped grid by name, or a file. Raises GridError."""
    path = Path(name_or_path)
    local = name_or_path.endswith(".json") or "/" in name_or_path
    if not local:
        path = train_preset_dir() / f"{name_or_path}.json"
        if not path.is_file():
            shipped = sorted(p.stem for p in train_preset_dir().glob("*.json") if _grid_file(p))
            raise GridError(f"no ablation grid named {name_or_path!r}; shipped grids: {', '.join(shipped) or 'none'}")
    try:
        data = jsonio.read_json(path, "ablation grid")
    except jsonio.InputFileError as err:
        raise GridError(str(err)) from None
    return data, (f"grid {name_or_path}" if not local else str(path))


def _grid_file(path: Path) -> bool:
    try:
        return is_grid(jsonio.read_json(path))
    except jsonio.InputFileError:
        return False


def expand(data, source: str) -> list[AblationRun]:
    """The grid's runs, architectures outer and rates inner (the order they are queued in). Raises GridError."""
    if not isinstance(data, dict):
        raise GridError(f"{source}: an ablation grid is a JSON object with base, architectures and rates")
    unknown = sorted(set(data) - set(GRID_FIELDS))
    if unknown:
        raise GridError(f"{source}: field {unknown[0]!r} is not a grid field (known: {', '.join(GRID_FIELDS)})")
    name = data.get("name")
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise GridError(f"{source}: field 'name' must be a name of letters, digits, '.', '_' or '-', got {name!r}")
    base = data.get("base")
    if not isinstance(base, dict):
        raise GridError(f"{source}: field 'base' must be a training plan (a JSON object)")
    for fixed in ("name", "architecture", "rate"):
        if fixed in base:
            raise GridError(f"{source}: field 'base.{fixed}' is set by the grid for each run; remove it from base")
    archs = data.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) and RUN_NAME.fullmatch(a) for a in archs):
        raise GridError(f"{source}: field 'architectures' must be a non-empty list of architecture names")
    if len(set(archs)) != len(archs):
        raise GridError(f"{source}: field 'architectures' names an architecture twice")
    points = _rates(data, base, source)
    runs = []
    for arch in archs:
        for rate, m in points:
            run_name = f"{name}-{arch}-m{m}" if m is not None else f"{name}-{arch}-r{rate:g}"
            config = {**base, "name": run_name, "architecture": arch, "rate": rate}
            runs.append(AblationRun(run_name, arch, rate, m, config))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):  # two rates printed alike by :g
        dup = next(n for n in names if names.count(n) > 1)
        raise GridError(f"{source}: field 'rates' gives two runs the same name {dup!r}; use rates further apart")
    return runs


def _rates(data: dict, base: dict, source: str) -> list[tuple[float, int | None]]:
    if ("rates" in data) == ("soft_tokens" in data):
        raise GridError(f"{source}: give the rates once, either as 'rates' (fraction kept) or as 'soft_tokens' (M)")
    if "rates" in data:
        rates = data["rates"]
        if not isinstance(rates, list) or not rates or not all(_number(r) and 0 < r <= 1 for r in rates):
            raise GridError(f"{source}: field 'rates' must be a non-empty list of fractions kept in (0, 1]")
        points = [(float(r), None) for r in rates]
    else:
        ms, context = data["soft_tokens"], base.get("context_tokens")
        if not isinstance(context, int) or isinstance(context, bool) or context < 1:
            raise GridError(f"{source}: field 'base.context_tokens' (a whole number) is needed to turn soft_tokens into rates")
        if not isinstance(ms, list) or not ms or not all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= context for m in ms):
            raise GridError(f"{source}: field 'soft_tokens' must be a non-empty list of whole numbers from 1 to "
                            f"base.context_tokens ({context})")
        points = [(m / context, m) for m in ms]
    if len({p[0] for p in points}) != len(points):
        raise GridError(f"{source}: field '{'rates' if 'rates' in data else 'soft_tokens'}' lists a value twice")
    return points


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_configs(runs: list[AblationRun], source: str) -> None:
    """Each run's plan as ``workbench train`` will read it: a bad base field fails here, before any run starts.

    Uses the training plan's own parser; a build without the learned family has none, and then the grid's own
    checks are all there is."""
    try:
        from workbench.learned.config import parse_train_config
    except ModuleNotFoundError:
        return
    for run in runs:
        try:
            parse_train_config(run.config, f"{source} (run {run.name})")
        except ValueError as err:
            raise GridError(str(err)) from None
