"""KVzap scorers trained by the workbench: targets (KVzip+ through kvpress), fit, store, training, CLI.

``store`` and ``cli`` import no torch (the plan, preflight and ``workbench --help`` read them); ``targets``,
``fit``, ``scorer`` and ``train`` compute.
"""
