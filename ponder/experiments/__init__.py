"""Experiments: sweeps that train many small models and report what they show.

`serial`: chain of thought on inherently serial problems (`ponder experiment serial`).
"""
