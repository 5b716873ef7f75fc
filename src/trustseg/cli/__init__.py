"""The ``trustseg`` command line: thin wrappers over the same functions the Python API exposes."""
