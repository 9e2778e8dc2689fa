"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUEST_SECONDS = Histogram(
    "gateway_request_seconds", "Time to answer an HTTP request", ["method", "route", "status"]
)
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused with 429", ["scope"])
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Requests refused with 401")
JWKS_FETCHES = Counter("gateway_jwks_fetches_total", "Fetches of the JWK set", ["outcome"])
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total", "gRPC calls that failed, by status code", ["code"]
)
MCP_CALLS = Counter(
    "gateway_mcp_tool_calls_total", "MCP tool calls, by tool and outcome", ["tool", "outcome"]
)
