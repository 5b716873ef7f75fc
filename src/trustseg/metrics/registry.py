"""Registry of metrics (pure tensor functions) by name, with their one-line docs.

Read by ``trustseg metrics`` (which lists them); the evaluation suite calls the metric functions directly.
"""

from trustseg.core.registry import Registry

METRICS: Registry = Registry("metric")
