"""The demo's fixed world: who the users are, what the upstream holds, and the policy.

Resource URIs are identifiers, not addresses: they stay the same wherever the
servers listen, so a compose file can register them once (docs/demo.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CLIENT_ID",
    "DEMO_POLICY",
    "FILES",
    "FILES_RESOURCE",
    "GATED_RESOURCE",
    "GATED_TOOL",
    "GATEWAY_CLIENT_ID",
    "GATEWAY_RESOURCE",
    "GATEWAY_RULES",
    "IDP_NAME",
    "MCP_RESOURCE",
    "TICKETS",
    "TICKETS_RESOURCE",
    "USERS",
    "DemoUser",
    "Ticket",
]

#: The MCP server's own resource URI: the audience users' tokens must carry.
MCP_RESOURCE: Final = "https://helpdesk-mcp.demo.example"
TICKETS_RESOURCE: Final = "https://tickets.demo.example"
FILES_RESOURCE: Final = "https://files.demo.example"
#: The MCP server's client registration at the issuer.
CLIENT_ID: Final = "mcp-helpdesk"
#: The gateway's resource URI (the `aud` of users' tokens for it) and its client registration at the issuer.
GATEWAY_RESOURCE: Final = "https://helpdesk-gateway.demo.example/mcp"
GATEWAY_CLIENT_ID: Final = "mcp-gateway"
#: The MCP server behind the gateway, registered as a tool whose actions are its MCP tool names.
GATED_TOOL: Final = "helpdesk-tools"
GATED_RESOURCE: Final = "https://helpdesk-tools.demo.example"
#: The development identity provider's registered name, also the namespace of its subjects.
IDP_NAME: Final = "dev-idp"


@dataclass(frozen=True)
class DemoUser:
    sub: str
    groups: tuple[str, ...]
    projects: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.sub} ({', '.join(self.groups)}; projects: {', '.join(self.projects)})"


USERS: Final = {
    "alice": DemoUser("alice", ("support",), ("apollo",)),
    "mallory": DemoUser("mallory", ("contractor",), ("website",)),
}


@dataclass(frozen=True)
class Ticket:
    id: int
    project: str
    title: str


TICKETS: Final = (
    Ticket(101, "apollo", "Checkout fails for cards issued in the EU"),
    Ticket(102, "apollo", "Order search takes 9 s"),
    Ticket(201, "website", "Broken link on the pricing page"),
    Ticket(301, "hr", "Salary review: bob (confidential)"),
    Ticket(302, "hr", "Disciplinary case 7 (confidential)"),
)

FILES: Final = {
    "/home/alice/notes.txt": "Vendor review Q3: the contract caps the invoice at EUR 48,000.",
    "/home/bob/salary.txt": "bob: EUR 7,250 a month (confidential)",
    "/home/mallory/todo.txt": "Fix the pricing page link.",
}

# Default deny: without a matching rule nobody reaches anything. The
# templates are filled from the verified user token at mint time, so each
# capability is bounded by the user it names, whatever the model asks for.
DEMO_POLICY: Final = f"""\
rules:
  - id: support-tickets
    description: support staff read the tickets of their own projects
    idp: {IDP_NAME}
    groups: [support]
    clients: [{CLIENT_ID}]
    tool: tickets
    scopes: [tickets:read]
    actions: [list]
    constraints:
      project: {{in: ["${{claims.projects}}"]}}
  - id: contractor-tickets
    description: contractors too, with shorter-lived capabilities
    idp: {IDP_NAME}
    groups: [contractor]
    clients: [{CLIENT_ID}]
    tool: tickets
    scopes: [tickets:read]
    actions: [list]
    max_lifetime: 60
    constraints:
      project: {{in: ["${{claims.projects}}"]}}
  - id: home-files
    description: everyone reads files in their own home directory only
    idp: {IDP_NAME}
    groups: [support, contractor]
    clients: [{CLIENT_ID}]
    tool: files
    scopes: [files:read]
    actions: [read]
    constraints:
      path: {{prefix: "/home/${{sub}}/"}}
"""

# The same entitlements through the gateway: one scope per MCP tool (tool:NAME, action NAME), and
# mcp:connect, which lets a user open a session and see nothing. Appended to the policy the demo applies.
GATEWAY_RULES: Final = f"""\
  - id: gateway-connect
    description: helpdesk users may open an MCP session through the gateway (and see only what they may use)
    idp: {IDP_NAME}
    groups: [support, contractor]
    clients: [{GATEWAY_CLIENT_ID}]
    tool: {GATED_TOOL}
    scopes: [mcp:connect]
  - id: gateway-tickets
    description: support staff list the tickets of their own projects, through the gateway
    idp: {IDP_NAME}
    groups: [support]
    clients: [{GATEWAY_CLIENT_ID}]
    tool: {GATED_TOOL}
    scopes: [tool:list_tickets]
    constraints:
      project: {{in: ["${{claims.projects}}"]}}
  - id: gateway-home-files
    description: support staff read files in their own home directory only, through the gateway
    idp: {IDP_NAME}
    groups: [support]
    clients: [{GATEWAY_CLIENT_ID}]
    tool: {GATED_TOOL}
    scopes: [tool:read_file]
    constraints:
      path: {{prefix: "/home/${{sub}}/"}}
"""
