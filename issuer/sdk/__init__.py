"""Client-side SDKs of the capability issuer.

* :mod:`issuer.sdk.client` - for MCP servers: exchange a user's token for a
  capability (RFC 8693) and attach it to outgoing calls.
* :mod:`issuer.sdk.verifier` - for upstream tools: verify a capability and
  authorize the call against the real user, its scopes, actions and argument
  constraints.

Importing either needs only the base install (PyJWT, cryptography and the
standard library): none of the issuer's server dependencies (Flask,
SQLAlchemy, Authlib, httpx, redis).  Framework adapters are separate modules
that you import explicitly.  Nothing is imported here, so importing one SDK
never loads the other.
"""
