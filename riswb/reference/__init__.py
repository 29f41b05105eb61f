"""The reference RIS near-field localization pipeline: a user of the workbench.

physics/ (simulator, MUSIC, CRB), the covariance network and its twelve loss terms, the
instrumented trainer, the bug zoo (faults) and the litmus checks.
"""
