"""Reads a run and judges it: rules, the report model and its renderers, gate, compare, plots.

Everything here is a function of a run directory (riswb.runlog); nothing reads a live
Workbench.
"""
