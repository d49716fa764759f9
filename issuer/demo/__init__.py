"""``issuer demo``: the confused deputy, played end to end over real HTTP on 127.0.0.1.

Development only. The bare command starts a throwaway stack in one process
(a development identity provider, an issuer in a temporary directory, a
tickets and files API protected by the verifier SDK, and an MCP server built
with the official ``mcp`` SDK whose tools exchange the user's token for
capabilities), plays a scripted conversation against it and prints a
transcript. ``issuer demo upstream`` and ``issuer demo mcp-server`` serve the
two demo servers on their own, for a compose file. docs/demo.md explains
what each step proves.

Modules: :mod:`.world` (the fixed users, data, tools and policy),
:mod:`.dev_idp`, :mod:`.local_issuer`, :mod:`.upstream`, :mod:`.mcp_server`,
:mod:`.servers` (threads and sockets), :mod:`.model` (the scripted model),
:mod:`.scenario`, :mod:`.transcript`, :mod:`.command` (the click group).
"""
