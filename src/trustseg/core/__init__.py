"""Lowest layer: tensor conventions, registries, configs, errors and atomic file output.

Nothing here imports any other trustseg layer.
"""
