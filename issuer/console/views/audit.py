"""The audit trail: filter, open one record, follow a transaction across hops, export, verify."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from ...admin.service import AUDIT_FILTERS, parse_time
from ...errors import ConfigurationError, describe
from ..context import render, service

__all__ = ["register"]

#: Newest records shown per page; the export has them all.
PAGE = 200


def _filters() -> tuple[dict[str, str | None], datetime | None, datetime | None]:
    """The query string as the service's filters; empty fields are no filter."""
    filters = {k: (request.args.get(k, "").strip()[:400] or None) for k in AUDIT_FILTERS}
    if filters.get("decision") not in (None, "granted", "denied"):
        raise ConfigurationError("decision: granted or denied")
    since = parse_time(request.args.get("since", "").strip() or None, "since")
    until = parse_time(request.args.get("until", "").strip() or None, "until")
    return filters, since, until


def _query_string(**override: str) -> str:
    from urllib.parse import urlencode

    keys = (*AUDIT_FILTERS, "since", "until")
    pairs = {k: request.args[k] for k in keys if request.args.get(k)}
    return urlencode({**pairs, **override})


def register(bp: Blueprint) -> None:
    @bp.get("/audit")
    def audit() -> tuple[str, int]:
        values: dict[str, Any] = {"filters": AUDIT_FILTERS, "args": request.args, "query": _query_string()}
        try:
            filters, since, until = _filters()
            rows = service().query_audit(filters, since=since, until=until, limit=PAGE, newest_first=True)
        except ConfigurationError as e:
            return render("audit.html", 400, rows=[], error=describe(e), **values)
        # A full page has older records behind it: the same filters, until the oldest shown.
        older = _query_string(until=rows[-1]["time"]) if len(rows) == PAGE else None
        return render("audit.html", rows=rows, page=PAGE, older=older, **values)

    @bp.get("/audit/<int:record_id>")
    def audit_record(record_id: int) -> tuple[str, int]:
        rows = service().query_audit({}, after_id=record_id - 1, limit=1) if 0 < record_id < 2**62 else []
        if not rows or rows[0]["id"] != record_id:
            return render("missing.html", 404, message=f"no audit record {record_id}")
        row = rows[0]
        return render("audit_record.html", row=row, can_follow="txn" in AUDIT_FILTERS and bool(row.get("txn")),
                      pretty=json.dumps(row, indent=2, sort_keys=True))

    @bp.get("/audit/export")
    def audit_export() -> Response | tuple[str, int]:
        svc = service()
        try:
            filters, since, until = _filters()
        except ConfigurationError as e:
            return render("audit.html", 400, rows=[], error=describe(e), filters=AUDIT_FILTERS, args=request.args,
                          query="")

        def lines() -> Iterator[str]:
            for row in svc.export_audit(filters, since=since, until=until):
                yield json.dumps(row, sort_keys=True) + "\n"

        return Response(stream_with_context(lines()), mimetype="application/x-ndjson",
                        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'})

    @bp.get("/audit/verify")
    def audit_verify() -> tuple[str, int]:
        return render("audit_verify.html", result=service().verify_audit())
