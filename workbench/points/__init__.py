"""Learned compression points (seed 003): a small classifier on the frozen model's hidden states says where a
compression point belongs in a chain of reasoning, and the ``learned-points`` decoding schedule compresses there.

``labels`` (where the points are in reference reasoning: the step-boundary rule, or an API model's ``<COMP>``
markers aligned back to the model's tokens; no torch), ``features`` (hidden states of the frozen model),
``classifier`` (the MLP, its checkpoint and the checks that it fits the loaded model), ``scores`` (F1 and the
baselines; no torch), ``train`` (resumable training), ``store`` (where checkpoints live; no torch), ``cli``
(``workbench train-points``), ``schedule`` (``LearnedPoints``), ``meta`` and ``meta_cli`` (what the text around
recorded points is, and accuracy against the number of compressions; no torch).
"""
