"""The registry entry of the ``learned-points`` schedule (no torch), for the decoding family's table."""

from __future__ import annotations

from workbench.methods.info import MethodInfo, ParamRule

LEARNED_POINTS = MethodInfo(
    name="learned-points", family="decoding",
    summary="compress where a classifier on the model's hidden states predicts a step ends (train: workbench train-points)",
    params={"press": "knorm", "budget": None, "classifier": None, "threshold": None},
    nested=("press",),
    builder="workbench.points.schedule:LearnedPoints",
    rules={"budget": ParamRule(kind=int, minimum=1, optional=True),
           "classifier": ParamRule(kind=str, optional=True),
           "threshold": ParamRule(kind=float, minimum=0.0, maximum=1.0, open_minimum=True, optional=True)},
)
