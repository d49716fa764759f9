"""Structured logs: one JSON object per line, with the request id of the request that logged it.

The issuer's modules log through the standard library; structlog's
ProcessorFormatter renders those records as JSON and merges the request id
that the app binds per request (contextvars, so each gunicorn thread keeps
its own). Configured once per process by ``issuer serve``. Nothing logged
here ever carries a token, secret or key: callers log types and names only.
"""

from __future__ import annotations

import logging

import structlog
import structlog.typing

__all__ = ["bind_request", "clear_request", "configure_logging"]


def configure_logging(level: str) -> None:
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


def bind_request(request_id: str) -> None:
    structlog.contextvars.bind_contextvars(request_id=request_id)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()
