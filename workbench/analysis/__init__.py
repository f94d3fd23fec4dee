"""Threshold analysis of one or more sessions: where does each method break, do the methods break at the same
kept rate, does the method matter more on some task types, and which methods are better on the same samples.

- ``data``: per-sample observations from sessions (ΔNLL or task score against the baseline on the same sample),
  the cells and samples several sessions share, and what was left out;
- ``curves``: per method the quality-vs-rate curve with confidence bands, the breakpoint r* with its interval
  (or why none is supported), and the area under the curve relative to the baseline;
- ``across``: paired comparisons (Wilcoxon, Holm) and a ranking with ties, the homogeneity of thresholds and
  curves, the method × task-type interaction;
- ``verdict``: the findings in plain words; ``text``: how every number is written; ``writers``: JSON,
  Markdown and PNG reports; ``cli``: ``workbench analyze``.

The statistics libraries (numpy, scipy, statsmodels, piecewise-regression, matplotlib) are imported by these
modules only, never at import time of the CLI, the session or the UI.
"""

from __future__ import annotations

ALPHA = 0.05  # the level of every test, and 1 − the level of every interval
