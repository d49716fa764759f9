"""The Overview: readiness, policy, keys, the last hour's decisions, the audit chain."""

from __future__ import annotations

from flask import Blueprint

from ..chart import stacked_bars
from ..context import render, service

__all__ = ["register"]


def register(bp: Blueprint) -> None:
    @bp.get("/")
    def overview() -> tuple[str, int]:
        data = service().overview()
        return render("overview.html", data=data, chart=stacked_bars(data["exchanges"]["buckets"]))
