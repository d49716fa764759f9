"""The scripted "model" and its MCP client: what an LLM agent does with a prompt, minus the LLM.

The planner is deliberately gullible. It cannot tell the user's own words
from the words of a document the user pasted, so an instruction hidden in
that document becomes a tool call like any other. That is how prompt
injection works against real models, and it is why the MCP server must not
be trusted to hold more rights than the user: here it holds none.

Tool calls go over MCP Streamable HTTP with the official SDK's client, the
user's token as the bearer, one session per conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx2
import mcp_types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

__all__ = ["Conversation", "ToolAnswer", "ToolCall", "conversation", "mcp_session", "plan"]

# An explicit call, wherever it appears: `read_file("/x")`, `list_tickets(project="hr")`.
_EXPLICIT: Final = re.compile(r'\b(read_file|list_tickets)\((?:\w+=)?"([^"]*)"\)')
# "my notes in /home/alice/notes.txt": a path the text mentions (not one quoted inside a call).
_PATH: Final = re.compile(r'(?<![\w"/.])(/home/[\w./-]*[\w])')
# "the HR tickets", "apollo tickets"
_PROJECT: Final = re.compile(r"\b([A-Za-z]\w*) tickets\b")
_ARGUMENT: Final = {"read_file": "path", "list_tickets": "project"}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def __str__(self) -> str:
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in self.arguments.items())
        return f"{self.name}({args})"


def plan(prompt: str) -> list[ToolCall]:
    """The tool calls a naive model makes for ``prompt``, in the order the text asks for them."""
    found: list[tuple[int, ToolCall]] = []
    for m in _EXPLICIT.finditer(prompt):
        found.append((m.start(), ToolCall(m[1], {_ARGUMENT[m[1]]: m[2]})))
    for m in _PATH.finditer(prompt):
        found.append((m.start(), ToolCall("read_file", {"path": m[1]})))
    for m in _PROJECT.finditer(prompt):
        if m[1].lower() not in ("the", "my", "open", "all", "which"):
            found.append((m.start(), ToolCall("list_tickets", {"project": m[1].lower()})))
    calls: list[ToolCall] = []
    for _, call in sorted(found, key=lambda pair: pair[0]):
        if call not in calls:
            calls.append(call)
    return calls


@dataclass(frozen=True)
class ToolAnswer:
    """What came back to the model: a result, or a tool error with the text the MCP server wrote."""

    is_error: bool
    text: str
    structured: dict[str, Any] | None = field(default=None)


class Conversation:
    """One MCP session in the user's name."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    async def call(self, call: ToolCall) -> ToolAnswer:
        result = await self._session.call_tool(call.name, call.arguments)
        text = "".join(b.text for b in result.content if isinstance(b, mcp_types.TextContent))
        structured = result.structured_content if isinstance(result.structured_content, dict) else None
        return ToolAnswer(is_error=result.is_error, text=text, structured=structured)


@asynccontextmanager
async def mcp_session(mcp_url: str, user_token: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP session over Streamable HTTP, the user's token as the bearer."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {user_token}"}, timeout=20, trust_env=False))
        read, write = await stack.enter_async_context(streamable_http_client(mcp_url, http_client=http))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


@asynccontextmanager
async def conversation(mcp_url: str, user_token: str) -> AsyncIterator[Conversation]:
    async with mcp_session(mcp_url, user_token) as session:
        yield Conversation(session)
