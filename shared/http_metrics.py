"""Prometheus metrics for the services' HTTP traffic, through Litestar's plugin, and the ``/metrics`` endpoint."""

from __future__ import annotations

from litestar.middleware.base import DefineMiddleware
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

# Series: timebank_http_requests_total, timebank_http_request_duration_seconds, timebank_http_requests_in_progress,
# timebank_http_requests_error_total; labelled method, path (the route template), status_code, app_name.
PREFIX = "timebank_http"


class MetricsController(PrometheusController):
    """Every metric of this process (prometheus_client's default registry) at ``/metrics``, for scrapers; it is
    not part of the API, so it stays out of the OpenAPI schema."""

    include_in_schema = False


def request_metrics(service: str) -> DefineMiddleware:
    """Count and time a service's requests, labelled ``app_name=<service>`` so services sharing a process are told
    apart. Paths are recorded as route templates (``/accounts/{account_id}``): one series per route, not one
    per account."""
    return PrometheusConfig(app_name=service, prefix=PREFIX, group_path=True).middleware
