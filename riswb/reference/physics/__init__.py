"""RIS-aided near-field localization: geometry, steering, channel, codes, scenes,
covariance estimators, MUSIC, model-order estimation, CRB and matching metrics.

Angles are radians and ranges metres everywhere inside; degrees appear only at the
edges (CLI tables, plots, JSON).
"""
