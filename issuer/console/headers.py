"""Response headers of every console page: what the browser may load, frame, cache and send on.

The policy allows no script at all (the console has none), styles and images
from this origin only, forms posted only here, and no framing, so injected
markup can neither run nor exfiltrate, and the pages cannot be clickjacked.
Pages show configuration and audit data, so no cache keeps them.
"""

from __future__ import annotations

from flask import Response

__all__ = ["CSP", "secure_headers"]

CSP = ("default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def secure_headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
