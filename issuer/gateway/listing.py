"""Lists filtered to what the user may use: a user never learns of a tool, prompt or resource policy denies them.

The filter is the session exchange's ``actions`` (see :mod:`.decisions`):
a tool is listed when its name is an action, a prompt when ``prompt:NAME``
is, resources and templates when ``resource:read`` is and, for a concrete
resource, its URI passes the policy's ``uri`` constraint. Anything the
filter does not understand is dropped, never passed: default deny; so is a
tool whose ``x-mcp-header`` annotations are invalid, which the MCP
specification asks clients to leave out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mcp.shared.inbound import find_invalid_x_mcp_header

from ..constraints import evaluate
from .decisions import RESOURCE_ACTION, UserGrant

__all__ = ["LIST_KEYS", "filter_result"]

LIST_KEYS: Final = {"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources",
                "resources/templates/list": "resourceTemplates"}


def _allowed(method: str, item: Mapping[str, Any], grant: UserGrant) -> bool:
    if method == "tools/list":  # a tool whose x-mcp-header annotations are invalid is excluded (MCP 2026-07-28)
        return (isinstance(item.get("name"), str) and item["name"] in grant.actions
                and find_invalid_x_mcp_header(item.get("inputSchema")) is None)
    if method == "prompts/list":
        return isinstance(item.get("name"), str) and f"prompt:{item['name']}" in grant.actions
    if RESOURCE_ACTION not in grant.actions:
        return False
    if method == "resources/templates/list":
        return True
    uri = item.get("uri")
    if not isinstance(uri, str):
        return False
    constraint = grant.constraints.get("uri")
    return constraint is None or not evaluate({"uri": constraint}, {"uri": uri})


def filter_result(method: str, result: Any, grant: UserGrant | None) -> Any:
    """``result`` of a list method with every entry the user may not use removed (all of them without a grant)."""
    key = LIST_KEYS[method]
    if not isinstance(result, dict):
        return result
    items = result.get(key)
    if not isinstance(items, list):
        return {**result, key: []}
    kept = [i for i in items if isinstance(i, dict) and grant is not None and _allowed(method, i, grant)]
    return {**result, key: kept}
