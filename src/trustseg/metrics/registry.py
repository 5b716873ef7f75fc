"""Registry of metrics (pure tensor functions) by name; the CLI's ``evaluate`` refers to these names."""

from trustseg.core.registry import Registry

METRICS: Registry = Registry("metric")
