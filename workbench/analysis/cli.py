"""`workbench analyze SESSION.json [SESSION.json …]`: the threshold analysis of saved sessions.

stdout: the verdict and the per-method thresholds (or the Markdown report with ``--markdown`` and no file, or
the JSON report with ``--json``); files with ``--out``, ``--markdown FILE``, ``--plot``. Exit codes: 0 the
analysis ran (a test the data cannot support is reported as not tested, with what is missing), 2 bad input (a
session that cannot be read, nothing to analyse, an option out of range): one line naming the file and the field.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _alpha(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value!r}") from None
    if not 0 < alpha < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value!r}")
    return alpha


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench analyze",
        description="Where does each method break? Per method the threshold r* (segmented regression, with its "
        "interval, or why none is supported) and the area under the quality-vs-rate curve; across methods paired "
        "comparisons on the same samples and a ranking, whether the thresholds and curves differ, the method × "
        "task-type interaction, and a verdict. Several sessions: only the cells and samples they share.")
    p.add_argument("sessions", nargs="+", metavar="SESSION.json", help="saved sessions")
    p.add_argument("--metric", choices=["ppl", "score"], help="quality measure (default: ppl when the sessions have "
                   "perplexities, else the task score)")
    p.add_argument("--alpha", type=_alpha, default=0.05, help="level of the tests and 1 − level of the intervals (0.05)")
    p.add_argument("--out", metavar="FILE", help="write the JSON report (every number, the methods and versions)")
    p.add_argument("--markdown", nargs="?", const="-", metavar="FILE", help="the Markdown report, to FILE or stdout")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG of the curves with r* and its interval")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    return p


def _output_problem(args) -> str | None:
    """Report files that would replace a session being analysed or one another, or a plot that is no PNG: said
    before the analysis runs, and nothing is written. (A missing folder is made; a path that is a folder is the
    writer's 'cannot write'.)"""
    from pathlib import Path

    outputs = [(flag, Path(path).expanduser()) for flag, path in
               (("--out", args.out), ("--markdown", None if args.markdown == "-" else args.markdown), ("--plot", args.plot))
               if path]
    sessions = {Path(p).expanduser().resolve() for p in args.sessions}
    seen: dict = {}
    for flag, path in outputs:
        where = path.resolve()
        if where in sessions:
            return f"{flag} {path}: is one of the sessions analysed; writing the report there would replace it"
        if where in seen:
            return f"{flag} {path}: {seen[where]} writes there too; give each report its own file"
        seen[where] = flag
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        return f"--plot {args.plot}: the plot is a PNG image; name a .png file"
    return None


def summary(report: dict) -> str:
    """The CLI's plain-text output: the verdict, then what was left out."""
    lines = ["Verdict:"] + [f"  {s}" for s in report["verdict"]]
    if report["left_out"]:
        lines += ["Left out:"] + [f"  {s}" for s in report["left_out"]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    if args.json and args.markdown == "-":
        print("workbench analyze: --json and --markdown without a file both print on stdout: give one", file=sys.stderr)
        return EXIT_BAD_INPUT
    bad = _output_problem(args)
    if bad:
        print(f"workbench analyze: {bad}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from workbench.analysis import writers
    from workbench.analysis.analyze import analyze
    from workbench.analysis.data import AnalysisInputError, load_sessions

    try:
        report = analyze(load_sessions(args.sessions), args.metric, args.alpha)
    except AnalysisInputError as err:
        print(f"workbench analyze: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.out:
            print(f"report written to {writers.write_json(report, args.out)}", file=sys.stderr)
        if args.markdown and args.markdown != "-":
            print(f"Markdown written to {writers.write_markdown(report, args.markdown)}", file=sys.stderr)
        if args.plot:
            print(f"plot written to {writers.write_plot(report, args.plot)}", file=sys.stderr)
    except writers.WriteError as err:
        print(f"workbench analyze: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(writers.json_text(report))
    elif args.markdown == "-":
        print(writers.markdown(report))
    else:
        print(summary(report))
    return EXIT_OK
