"""``workbench points-meta SESSION.json``: what the text around a session's compression points is (after a
calculation, a conclusion, a restatement, a new step, other), per method, and accuracy against the number of
compressions. Exit codes: 0 analysed, 2 a session that cannot be read or records no compression points."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="workbench points-meta", description=__doc__.split("Exit codes")[0].strip())
    p.add_argument("session", metavar="SESSION.json")
    p.add_argument("--json", action="store_true", help="the full report as JSON (accuracy per method and bin, examples)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    from workbench.points.meta import MetaInputError, analyse, text
    from workbench.session import Session, SessionError

    try:
        report = analyse(Session.load(args.session))
    except (SessionError, MetaInputError) as err:
        print(f"workbench points-meta: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else text(report))
    return 0
