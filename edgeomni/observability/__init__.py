"""Observability: Prometheus metrics of the runtime (`metrics`), liveness/readiness and the `run --metrics`
endpoint (`health`), Jetson telemetry from tegrastats (`tegrastats`), and their config sections (`config`)."""

from edgeomni.observability.config import MetricsConfig, TelemetryConfig, parse_listen

__all__ = ["MetricsConfig", "TelemetryConfig", "parse_listen"]
