"""``/metrics`` in Prometheus' text format (prometheus-client), for machines."""

from .app import MetricsApp

__all__ = ["MetricsApp"]
