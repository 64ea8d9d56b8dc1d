"""Rate, errors and duration of HTTP requests per route (RED), for every service's `/metrics`.

Requests are labelled by the route template that matched (`/v1/screenings/{screening_id}`),
never by the path they asked for: a path holds ids, and an id as a label value would make
one time series per client and put identifiers in the monitoring system. A request that no
route matched is labelled `unmatched`, and an unusual method `other`, so that a scanner cannot
grow the label sets either.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

HTTP_REQUESTS = Counter(
    "clinicflow_http_requests_total",
    "HTTP requests answered, by method, route template and status class (2xx, 4xx, 5xx).",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "clinicflow_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class HttpMetrics:
    """Pure-ASGI middleware: outermost, so it also counts what other middleware answers (413)
    and requests that end in an unhandled error (counted as 5xx)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            HTTP_REQUESTS.labels(method, route, f"{status // 100}xx").inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
