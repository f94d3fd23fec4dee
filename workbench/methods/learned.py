"""Learned soft compressors as methods (no torch): one method, ``learned``, whose ``checkpoint`` names a trained run.

Its rate is the trained rate. A compressor is trained for one rate (k = round(rate × C) soft vectors), so a plan
lists it without rates and its cells sit in the trained rate's column; rates given explicitly must be that rate
(``rates_for``). ``untrained: true`` measures the same architecture, rate and seed as the run but with the
weights it started from (the run's step 0): the untrained self every trained compressor is compared with.
"""

from __future__ import annotations

from workbench.methods.info import MethodInfo, ParamRule

RATE = "rate"

LEARNED: dict[str, MethodInfo] = {
    i.name: i
    for i in [
        MethodInfo(name="learned", family="learned",
                   summary="a trained soft compressor (workbench train): the context's embeddings into rate × C soft "
                           "vectors read ahead of the continuation",
                   params={RATE: None, "checkpoint": "", "untrained": False}, rate_param=RATE,
                   implementation="workbench.learned.measure:SoftPrefixer", aliases=("soft", "soft-compressor"),
                   rules={"checkpoint": ParamRule(kind=str), "untrained": ParamRule(kind=bool)}),
    ]
}


def trained_rate(checkpoint: str) -> tuple[float, str]:
    """(the rate a run was trained at, the checkpoint folder) from its state.json. Raises ValueError (not found,
    unreadable) with a message naming what was looked for."""
    from workbench.learned import store

    folder = store.find(checkpoint)
    state = store.read_json(folder / store.STATE)
    try:
        rate = float(state["compressor"]["rate"])
    except (TypeError, KeyError, ValueError):
        raise store.CheckpointError(f"{folder / store.STATE}: not a soft-compressor checkpoint") from None
    store.check_tensor_files(folder, state)
    return rate, str(folder)


def rates_for(params: dict, given: list | None) -> list:
    """The method's rates: the trained rate when none are given; given rates must be exactly it. Raises ValueError.
    One given rate and no run to check it against is accepted (a session saved before its run was deleted)."""
    if not params.get("checkpoint"):
        raise ValueError("checkpoint: name a trained run (workbench train --list) or a run/checkpoint folder")
    from workbench.learned.store import CheckpointError

    try:
        rate, folder = trained_rate(params["checkpoint"])
    except CheckpointError as err:
        if given is not None and len(given) == 1:
            # A saved session's plan (its rates written out) still opens when the run is gone: its cells say why
            # when they are run again.
            return given
        raise ValueError(f"checkpoint: {err}") from None
    if given is not None and [round(r, 6) for r in given] != [round(rate, 6)]:
        raise ValueError(f"rates: {params['checkpoint']!r} was trained at rate {rate:g} ({folder}); a soft compressor is "
                         f"measured at its trained rate: leave out 'rates' or give [{rate:g}]")
    return [rate]
