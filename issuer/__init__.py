"""MCP capability issuer: RFC 8693 token exchange for capability tokens.

Importing this package pulls in nothing beyond the standard library, so the
SDK subpackages stay importable with only PyJWT and cryptography installed.
"""

__version__ = "0.1.0"
