"""Compression while the model generates (seed 003): a schedule says *when* the cache is compressed, a
score-based press says *what* is evicted, a target says *how much* is kept (a rate of the tokens so far, or a
fixed budget of tokens). The decoding protocol generates under them and scores the result.

``schedule.py`` is the contract every schedule meets (the decoding loop calls it once per generated token);
``boundaries.py`` is the step-boundary rule, shared by the ``step-boundaries`` schedule and the offline labels
the compression-point classifier is trained on, so both put points in the same places. No torch at import.
"""
