"""Prometheus metrics for the services' HTTP traffic: a lean ASGI middleware, and the ``/metrics`` endpoint.

The series are the ones Litestar's Prometheus plugin would make (same names, labels and help), but the labelled
children are looked up once per route and status, not resolved label by label on every request: the plugin's
per-request work cost more CPU than a search's own handler.
"""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.middleware.base import DefineMiddleware
from litestar.plugins.prometheus import PrometheusController
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

PREFIX = "timebank_http"
# method, path (the route template), status_code, app_name: the plugin's labels, in its order.
_LABELS = ("method", "path", "status_code", "app_name")

# Series: timebank_http_requests_total, timebank_http_request_duration_seconds, timebank_http_requests_in_progress,
# timebank_http_requests_error_total (errors are answers with a 5xx status).
REQUESTS = Counter(f"{PREFIX}_requests_total", "Total requests", _LABELS)
DURATION = Histogram(f"{PREFIX}_request_duration_seconds", "Request duration, in seconds", _LABELS)
IN_PROGRESS = Gauge(
    f"{PREFIX}_requests_in_progress", "Total requests currently in progress", _LABELS, multiprocess_mode="livesum"
)
ERRORS = Counter(f"{PREFIX}_requests_error_total", "Total errors in requests", _LABELS)


class MetricsController(PrometheusController):
    """Every metric of this process (prometheus_client's default registry) at ``/metrics``, for scrapers; it is
    not part of the API, so it stays out of the OpenAPI schema."""

    include_in_schema = False


class _Outcome:
    """The children one route's answers with one status count into."""

    __slots__ = ("duration", "errors", "requests")

    def __init__(self, labels: tuple[str, str, str, str]) -> None:
        self.requests = REQUESTS.labels(*labels)
        self.duration = DURATION.labels(*labels)
        self.errors = ERRORS.labels(*labels) if int(labels[2]) >= 500 else None


class _Route:
    """One route's series (per method): in progress, and an outcome per status seen so far."""

    __slots__ = ("in_progress", "method", "outcomes", "path", "service")

    def __init__(self, method: str, path: str, service: str) -> None:
        self.method, self.path, self.service = method, path, service
        # As the plugin did, requests in flight are labelled with status 200: the status is not known yet.
        self.in_progress = IN_PROGRESS.labels(method, path, "200", service)
        self.outcomes: dict[int, _Outcome] = {}

    def outcome(self, status: int) -> _Outcome:
        found = self.outcomes.get(status)
        if found is None:
            found = self.outcomes[status] = _Outcome((self.method, self.path, str(status), self.service))
        return found


class RequestMetrics:
    """Count and time every request a route answers, in the series above, labelled with its route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._routes: dict[tuple[str, str], _Route] = {}

    def _route(self, scope: Scope) -> _Route:
        # A websocket has no method: its scope type stands in, as in Litestar's plugin.
        method: str = scope["method"] if scope["type"] == ScopeType.HTTP else scope["type"]
        path = scope["path_template"]
        route = self._routes.get((method, path))
        if route is None:
            route = self._routes[method, path] = _Route(method, path, self.service)
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        start = time.perf_counter()
        status = 200
        duration = 0.0

        async def watching(message: Message) -> None:
            nonlocal status, duration
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                # Up to the last part of the body handed to the server.
                duration = time.perf_counter() - start
            await send(message)

        route.in_progress.inc()
        try:
            await self.app(scope, receive, watching)
        finally:
            route.in_progress.dec()
            outcome = route.outcome(status)
            if outcome.errors is not None:
                outcome.errors.inc()
            outcome.requests.inc()
            outcome.duration.observe(duration)


def request_metrics(service: str) -> DefineMiddleware:
    """Count and time a service's requests, labelled ``app_name=<service>`` so services sharing a process are told
    apart. Paths are recorded as route templates (``/accounts/{account_id}``): one series per route, not one
    per account."""
    return DefineMiddleware(RequestMetrics, service=service)
