"""The verdict: the findings of an analysis report in plain words, with the numbers behind them.

The hypothesis it judges is seed 000's: every method breaks at the same kept rate (one shared threshold r*).
"""

from __future__ import annotations

from workbench.analysis import text

HYPOTHESIS = "every method breaks at the same kept rate (one shared threshold r*)"


def sentences(report: dict) -> list[str]:
    out = []
    methods = report["methods"]
    declined: dict[str, list[str]] = {}  # one sentence for the methods declined for the same reason
    for name, entry in methods.items():
        th = entry["threshold"]
        if th["status"] == "found":
            out.append(text.threshold_line(name, th, report["metric"]) + ".")
        else:
            declined.setdefault(th["reason"], []).append(name)
    for reason, names in declined.items():
        who = "every method" if len(names) == len(methods) > 1 else ", ".join(names)
        out.append(f"No r* for {who}: {reason}.")
    hom = report["homogeneity"]["thresholds"]
    if hom["status"] == "tested":
        spread = f"r* from {text.rate(min(hom['r_star'].values()))} to {text.rate(max(hom['r_star'].values()))}"
        out.append(("Thresholds differ" if hom["differ"] else "No evidence that the thresholds differ")
                   + f", {text.p(hom['p'])} ({spread}; F = {hom['F']:.2f}).")
    else:
        out.append(f"Thresholds not compared: {hom['reason']}.")
    curves = report["homogeneity"]["curves"]
    if curves["status"] == "tested":
        out.append(("The curves differ in shape" if curves["differ"] else "No evidence that the curves differ in shape")
                   + f" (method × rate, {text.p(curves['p'])}); the methods' levels differ with {text.p(curves['method_p'])}.")
    else:
        out.append(f"Curve shapes not compared: {curves['reason']}.")
    pairs = report["paired"]
    if pairs["status"] == "tested":
        significant = [c for c in pairs["comparisons"] if c["significant"]]
        tested = [c for c in pairs["comparisons"] if c["p"] is not None]
        out.append(f"Ranking on the same samples ({len(significant)} of {len(tested)} paired differences significant "
                   f"after Holm, α = {pairs['alpha']:g}): {text.ranking(pairs['ranking'])}.")
    else:
        out.append(f"No ranking: {pairs['reason']}.")
    inter = report["interaction"]
    if inter["status"] == "tested":
        out.append(("The method × task-type interaction is significant" if inter["significant"] else
                    "The method × task-type interaction is not significant") + f", {text.p(inter['p'])}.")
    else:
        out.append(f"Method × task type not tested: {inter['reason']}.")
    if hom["status"] == "tested":
        judged = "rejected" if hom["differ"] else "not rejected"
        out.append(f"Hypothesis \"{HYPOTHESIS}\": {judged} ({text.p(hom['p'])}).")
    else:
        out.append(f"Hypothesis \"{HYPOTHESIS}\": cannot be judged on this data (the thresholds were not compared).")
    return out
