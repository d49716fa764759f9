"""OAuth 2.0 Token Exchange (RFC 8693) as an Authlib grant.

https://www.rfc-editor.org/rfc/rfc8693

The grant parses and checks the request's shape (section 2.1), authenticates
the client with Authlib's registry, and hands the rest to
:class:`issuer.exchange.Exchanger`, which owns the decision. The response is
section 2.2.1's: ``access_token``, ``issued_token_type``, ``token_type``,
``expires_in``, ``scope``; ``Cache-Control: no-store``.

With a valid ``DPoP`` proof header (RFC 9449) the capability is bound to the
proof's key (``cnf.jkt``) and answered with ``token_type: DPoP``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from typing import Any

from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from flask import g, request

from .. import clock
from ..dpop import DPoPError, NonceSource, verify_proof
from ..errors import InvalidDPoPProof, InvalidRequest, InvalidTarget, UnauthorizedClient, UseDPoPNonce
from ..exchange import SUBJECT_TOKEN_TYPES, Exchanger, ExchangeRequest
from ..grant_details import parse_authorization_details
from ..minting import ACCESS_TOKEN_TYPE
from ..replay import ReplayCache
from .client_auth import reject_multiple_methods

__all__ = ["DPOP_MAX_AGE", "GRANT_TYPE", "TokenExchangeGrant"]

#: Seconds a DPoP proof is accepted after its iat (plus the leeway): long enough for one request.
DPOP_MAX_AGE = 60

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
_SINGLE = (
    "grant_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "scope",
    "requested_token_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "txn",
)
#: A caller's transaction id (an MCP request id, a trace id): printable ASCII, no spaces.
_TXN = re.compile(r"[\x21-\x7e]{1,100}")
_MAX_TOKEN = 16 * 1024
_MAX_SCOPES = 50


class TokenExchangeGrant(BaseGrant, TokenEndpointMixin):  # type: ignore[misc]
    GRANT_TYPE = GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    #: set by the app factory: the decision service, the shared seen-once store, this endpoint's URL,
    #: and the nonce source when DPoP nonces are on
    exchanger: Exchanger
    replay: ReplayCache
    token_url: str
    nonces: NonceSource | None = None

    def validate_token_request(self) -> None:
        form = self.request.form
        for name in _SINGLE:
            if len(form.getlist(name)) > 1:
                raise InvalidRequest(f"parameter {name} is repeated")
        reject_multiple_methods(self.request)
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(GRANT_TYPE):
            raise UnauthorizedClient("this client may not use token exchange")
        self.request.client = client
        self._params = self._parse(form)
        jkt = self._dpop_key()
        if jkt is None and client.dpop_required:
            raise InvalidDPoPProof("DPoP proof: this client must send one (its capabilities are key-bound)")
        if jkt is not None:
            self._params = dataclasses.replace(self._params, dpop_jkt=jkt)

    def _dpop_key(self) -> str | None:
        """The thumbprint of a valid DPoP proof's key (RFC 9449 section 4.3), None without a proof."""
        proofs = request.headers.getlist("DPoP")
        if not proofs:
            return None
        # WSGI servers join repeated headers with commas; a compact JWS never holds one.
        if len(proofs) > 1 or "," in proofs[0]:
            raise InvalidDPoPProof("DPoP proof: exactly one DPoP header is allowed")
        leeway = self.exchanger.settings.leeway
        try:
            proof = verify_proof(proofs[0], method="POST", url=self.token_url, now=clock.now(),
                                 max_age=DPOP_MAX_AGE, leeway=leeway)
        except DPoPError as e:
            raise InvalidDPoPProof(f"DPoP proof: {e}") from None
        if self.nonces is not None and not self.nonces.valid(proof.claims.get("nonce"), clock.now()):
            raise UseDPoPNonce("DPoP proof: use the nonce in the DPoP-Nonce header")
        # Seen once across every worker and replica, for as long as the proof could be accepted.
        key = hashlib.sha256(f"dpop\x00{proof.jkt}\x00{proof.jti}".encode()).hexdigest()
        if not self.replay.first_use(key, DPOP_MAX_AGE + 2 * leeway):
            raise InvalidDPoPProof("DPoP proof: this proof (jti) was already used")
        return proof.jkt

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        g.audited = True  # from here the exchange writes the record, whatever the outcome
        cap = self.exchanger.exchange(self.request.client, self._params)
        body = {
            "access_token": cap.token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "DPoP" if "cnf" in cap.claims else "Bearer",
            "expires_in": cap.expires_in,
            "scope": cap.claims["scope"],
        }
        if "authorization_details" in cap.claims:
            body["authorization_details"] = cap.claims["authorization_details"]
        return 200, body, self.TOKEN_RESPONSE_HEADER

    def _parse(self, form: Any) -> ExchangeRequest:
        subject_token = form.get("subject_token")
        subject_type = form.get("subject_token_type")
        if not subject_token:
            raise InvalidRequest("subject_token is required")
        if len(subject_token) > _MAX_TOKEN:
            raise InvalidRequest("subject_token is too large")
        if not subject_type:
            raise InvalidRequest("subject_token_type is required")
        if subject_type not in SUBJECT_TOKEN_TYPES:
            raise InvalidRequest("unsupported subject_token_type")
        actor_token, actor_type = form.get("actor_token"), form.get("actor_token_type")
        if bool(actor_token) != bool(actor_type):
            raise InvalidRequest("actor_token and actor_token_type go together")
        if actor_type is not None and actor_type not in SUBJECT_TOKEN_TYPES:
            raise InvalidRequest("unsupported actor_token_type")
        if actor_token is not None and len(actor_token) > _MAX_TOKEN:
            raise InvalidRequest("actor_token is too large")
        requested = form.get("requested_token_type")
        if requested is not None and requested != ACCESS_TOKEN_TYPE:
            raise InvalidRequest("requested_token_type: only access_token is issued")
        resources, audiences = form.getlist("resource"), form.getlist("audience")
        if len(resources) + len(audiences) > 1:
            raise InvalidTarget("exactly one target per capability: one resource or one audience")
        if not resources and not audiences:
            raise InvalidTarget("a target is required: resource or audience")
        if resources and (not resources[0] or "#" in resources[0]):
            raise InvalidTarget("resource must be an absolute URI without a fragment")
        if len(form.getlist("authorization_details")) > 1:
            raise InvalidRequest("parameter authorization_details is repeated")
        raw_details = form.get("authorization_details")
        details = parse_authorization_details(raw_details) if raw_details is not None else None
        scope = form.get("scope")
        scopes: tuple[str, ...] | None = None
        if scope is not None:
            parts = scope.split(" ")
            if not scope or any(not p for p in parts):
                raise InvalidRequest("scope must be space-separated scope tokens")
            if len(parts) > _MAX_SCOPES:
                raise InvalidRequest("too many scopes")
            scopes = tuple(dict.fromkeys(parts))
        return ExchangeRequest(
            subject_token=subject_token,
            subject_token_type=subject_type,
            actor_token=actor_token,
            actor_token_type=actor_type,
            resource=resources[0] if resources else None,
            audience=audiences[0] if audiences else None,
            scopes=scopes,
            details=details,
            request_id=g.get("request_id") or uuid.uuid4().hex,
            client_addr=request.remote_addr,
            txn=self._txn(form.get("txn")),
        )

    @staticmethod
    def _txn(value: str | None) -> str | None:
        if value is not None and not _TXN.fullmatch(value):
            raise InvalidRequest("txn: 1 to 100 printable ASCII characters without spaces")
        return value
