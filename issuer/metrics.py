"""Prometheus metrics, one registry per app (no module-level metric objects).

Under gunicorn several worker processes serve one port, so ``issuer serve``
sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start and ``/metrics``
aggregates every worker's values from that folder (prometheus_client's
multiprocess mode); a single process (tests, ``make run`` without it) uses a
plain registry.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._render = CollectorRegistry()
        if multiprocess:
            MultiProcessCollector(self._render)  # type: ignore[no-untyped-call]
        own = None if multiprocess else self._render
        self.exchanges = Counter("issuer_exchanges_total", "Token exchange decisions.",
                                 ["decision", "reason"], registry=own)
        self.latency = Histogram("issuer_exchange_seconds", "Token endpoint latency, audit commit included.",
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                 registry=own)
        self.audit_failures = Counter("issuer_audit_write_failures_total", "Audit rows that could not be written.",
                                      ["decision"], registry=own)
        self.rate_limit_switches = Counter(
            "issuer_rate_limit_backend_switches_total",
            "Switches of the rate-limit backend: to 'degraded' (Redis lost, per-process windows) or back to 'shared'.",
            ["to"], registry=own)
        self.client_auth_failures = Counter(
            "issuer_client_auth_failures_total",
            "Failed client authentications at /token, /introspect and /revoke: 'invalid_client', or "
            "'rate_limited' when refused unchecked because the claimed client id failed too often.",
            ["endpoint", "reason"], registry=own)
        self.admin_auth_failures = Counter(
            "issuer_admin_auth_failures_total",
            "Failed admin-key sign-ins on the admin API ('api') or the console ('console'): 'invalid_key', "
            "or 'rate_limited' when refused unchecked because the address or key id failed too often.",
            ["surface", "reason"], registry=own)
        self.jwks_failures = Counter("issuer_jwks_fetch_failures_total", "Failed identity-provider JWKS fetches.",
                                     ["idp"], registry=own)

    def render(self) -> bytes:
        return generate_latest(self._render)
