"""The registry entry of the ``learned-points`` schedule (no torch).

``LEARNED_POINTS_ARGS`` are the arguments of the decoding table's ``schedule_entry`` (workbench/methods/schedules.py),
which adds the common press / rate / budget parameters; ``LEARNED_POINTS`` is the same entry as a MethodInfo for a
table without that function.
"""

from __future__ import annotations

from workbench.methods.info import MethodInfo, ParamRule

SUMMARY = ("compress where a classifier on the model's hidden states predicts that a step of reasoning ended "
           "(train it with workbench train-points)")
RULES = {"classifier": ParamRule(kind=str, optional=True),
         "threshold": ParamRule(kind=float, minimum=0.0, maximum=1.0, open_minimum=True, optional=True)}

LEARNED_POINTS_ARGS = {"name": "learned-points", "builder": "workbench.points.schedule:LearnedPoints", "summary": SUMMARY,
                       "params": {"classifier": None, "threshold": None}, "rules": RULES, "aliases": ("learned",)}

LEARNED_POINTS = MethodInfo(
    name="learned-points", family="decoding", summary=SUMMARY,
    params={"rate": None, "press": "knorm", "budget": None, "classifier": None, "threshold": None},
    rate_param="rate", nested=("press",), implementation="LearnedPoints", builder=LEARNED_POINTS_ARGS["builder"],
    rules={"budget": ParamRule(kind=int, minimum=1, optional=True), **RULES}, aliases=("learned",),
)
