#!/usr/bin/env python3
"""Compare two sessions sample by sample: do their numbers agree?

    python scripts/compare_sessions.py BEFORE.json AFTER.json [--tolerance REL]

For every cell of both sessions (matched by key) and every sample (matched by id), compares ``nll_sum``,
``score``, ``n_tokens`` and the kept fractions. Without --tolerance the numbers must be bitwise equal (what
a refactoring must leave unchanged on a CPU in float32); with it, relative differences up to REL pass.
Prints one line per difference (the first 20) and a summary; exit 0 when they agree, 1 when not, 2 when a
file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

FIELDS = ("nll_sum", "n_tokens", "score", "kept_fraction", "kept_fraction_physical", "kv_bytes")


def _cells(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return {c["key"]: {s["sample_id"]: s for s in c.get("samples", [])} for c in data["cells"]}


def differences(before: dict, after: dict, tolerance: float = 0.0) -> tuple[list[str], int]:
    """(lines describing each difference, number of sample values compared)."""
    out, compared = [], 0
    for key in sorted(set(before) | set(after)):
        if key not in before or key not in after:
            out.append(f"{key}: only in {'after' if key in after else 'before'}")
            continue
        a, b = before[key], after[key]
        for sid in sorted(set(a) | set(b)):
            if sid not in a or sid not in b:
                out.append(f"{key} {sid}: only in {'after' if sid in b else 'before'}")
                continue
            for name in FIELDS:
                x, y = a[sid].get(name), b[sid].get(name)
                compared += 1
                if x == y:
                    continue
                if isinstance(x, (int, float)) and isinstance(y, (int, float)) and tolerance > 0:
                    if abs(x - y) <= tolerance * max(abs(x), abs(y)):
                        continue
                out.append(f"{key} {sid} {name}: {x!r} → {y!r}")
    return out, compared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--tolerance", type=float, default=0.0, help="relative tolerance (default 0: bitwise equal)")
    args = parser.parse_args(argv)
    try:
        before, after = _cells(args.before), _cells(args.after)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"compare_sessions: cannot read the sessions: {err}", file=sys.stderr)
        return 2
    diffs, compared = differences(before, after, args.tolerance)
    for line in diffs[:20]:
        print(line)
    what = "bitwise equal" if args.tolerance == 0 else f"equal within {args.tolerance:g} relative"
    samples = sum(len(c) for c in before.values())
    print(f"{len(before)} cells, {samples} samples, {compared} values compared: "
          + (f"{what}" if not diffs else f"{len(diffs)} differ"))
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
