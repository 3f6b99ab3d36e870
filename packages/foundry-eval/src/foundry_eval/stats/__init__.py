"""Evaluation statistics: Clopper–Pearson intervals, Beta posteriors, balanced aggregation, STEP (our own
implementation from arXiv 2503.10966), Lai's test, Barnard's exact test, compact letter display.

Import-light on purpose: numpy and scipy only, never torch (tested in a subprocess).
"""
