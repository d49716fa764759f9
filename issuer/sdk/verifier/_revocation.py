"""The issuer's revocation feed, polled by a background thread.

Feed contract (``revocation_feed_endpoint`` in the issuer metadata)::

    GET {endpoint}?since=<float>
    200 application/jwt: a compact JWS, header typ "revocation-feed+jwt", signed by a key of the
    issuer's JWKS (ES256 or EdDSA), whose payload is
    {"iss": issuer, "iat": int, "version": int, "issued_at": <float>,
     "jtis":     [{"jti": str, "exp": int}],
     "subjects": [{"sub_sha256": base64url(sha256(sub)), "revoked_before": int}],
     "clients":  [{"client_id": str, "revoked_before": int}]}

The first poll asks for everything still live (no ``since``); later polls ask
from ``previous issued_at - 5`` so clock skew between issuer replicas cannot
drop an entry.  A capability is revoked when its ``jti`` is listed (the issuer
lists every capability chained from a revoked one too), when a subject entry
matches its ``sub``, or when a client entry names its ``client_id`` or any
actor of its ``act`` chain, and it was issued before ``revoked_before``.
Entries are kept only while they can matter: a ``jti`` until its token expires
(plus leeway), a subject or client entry an hour after ``revoked_before``
(longer than any capability lives).

A feed is applied only if its signature verifies with the issuer's keys, its
``iss`` is the issuer, its ``version`` is not below the last one applied (a
replayed older feed would hide later revocations), and its ``iat`` is recent
(a feed frozen in time by someone in the middle would too).

Freshness is a guarantee, not a hope: the poller runs every ``interval``
seconds; if the list has not been refreshed for ``2 * interval + timeout``
seconds (issuer unreachable, thread gone after a fork) :meth:`ensure_current`
first tries one synchronous poll and then refuses with
:class:`IssuerUnavailable`, rather than admit capabilities that may have been
revoked long ago.  An issuer whose metadata advertises no feed has nothing to
poll: its capabilities are checked only for expiry.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ... import clock
from ._capability import Capability
from ._discovery import Discovery
from ._http import FetchError, fetch_bytes
from .errors import CapabilityError, IssuerUnavailable, Revoked

__all__ = ["FEED_TYP", "SUBJECT_WINDOW", "RevocationPoller", "sub_digest"]

log = logging.getLogger("issuer.sdk.verifier")

#: How long a subject entry is kept after ``revoked_before``.
SUBJECT_WINDOW = 3600
#: ``since`` is the previous ``issued_at`` minus this many seconds.
SINCE_OVERLAP = 5.0
#: The JWS ``typ`` of the signed feed: never accepted where a capability is expected, nor the reverse.
FEED_TYP = "revocation-feed+jwt"


def sub_digest(sub: str) -> str:
    """base64url(SHA-256(sub, UTF-8)) without padding: how the feed names a user."""
    return base64.urlsafe_b64encode(hashlib.sha256(sub.encode("utf-8")).digest()).rstrip(b"=").decode()


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


@dataclass(frozen=True)
class _Feed:
    version: int
    issued_at: float
    jtis: dict[str, float]
    subjects: dict[str, float]
    clients: dict[str, float]


def _entries(doc: Mapping[str, Any], name: str, key: str, when: str) -> dict[str, float]:
    raw = doc.get(name, [])
    if not isinstance(raw, list):
        raise FetchError(f"revocation feed: {name} must be an array")
    out: dict[str, float] = {}
    for entry in raw:
        if not isinstance(entry, Mapping) or not isinstance(entry.get(key), str) or not _finite(entry.get(when)):
            raise FetchError(f"revocation feed: malformed {name} entry")
        out[entry[key]] = max(float(entry[when]), out.get(entry[key], -math.inf))
    return out


def _parse_feed(doc: Any) -> _Feed:
    """Validate a whole feed payload; one malformed entry rejects it all (the old state is kept)."""
    if not isinstance(doc, Mapping) or not _finite(doc.get("issued_at")):
        raise FetchError("revocation feed: not a feed document")
    version = doc.get("version")
    if type(version) is not int or version < 0:
        raise FetchError("revocation feed: no version")
    return _Feed(version, float(doc["issued_at"]), _entries(doc, "jtis", "jti", "exp"),
                 _entries(doc, "subjects", "sub_sha256", "revoked_before"),
                 _entries(doc, "clients", "client_id", "revoked_before"))


class RevocationPoller:
    """Revocation state for one verifier, kept current by a daemon thread."""

    def __init__(
        self,
        discovery: Discovery,
        verify_signed: Callable[[str], dict[str, Any]],
        *,
        issuer: str,
        interval: float,
        timeout: float,
        leeway: float,
        allow_insecure_loopback: bool,
        retry_interval: float,
    ) -> None:
        self._discovery = discovery
        self._verify_signed = verify_signed
        self._issuer = issuer
        self.interval = interval
        self.timeout = timeout
        self.leeway = leeway
        self.allow_insecure_loopback = allow_insecure_loopback
        self.retry_interval = retry_interval
        self.max_staleness = 2 * interval + timeout
        self._poll_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        # State: replaced as a whole (copy on write), so readers need no lock.
        self._jtis: dict[str, float] = {}
        self._subjects: dict[str, float] = {}
        self._clients: dict[str, float] = {}
        self._issued_at: float | None = None
        self.version = -1  #: of the last feed applied; an older one is a rollback and refused
        self._last_success: float | None = None
        self._last_attempt: float | None = None
        self._warned_no_feed = False
        self.polls = 0
        # A fork may happen while the poller holds a lock; the child starts with fresh ones.
        after_fork = weakref.WeakMethod(self._after_fork_in_child)
        os.register_at_fork(after_in_child=lambda: (m := after_fork()) is not None and m())

    # ------------------------------------------------------------------ checks

    def check(self, cap: Capability) -> None:
        """Raise :class:`Revoked` if the current list revokes ``cap``."""
        if cap.jti in self._jtis:
            raise Revoked()
        subjects = self._subjects
        if subjects:
            before = subjects.get(sub_digest(cap.sub))
            if before is not None and cap.issued_at < before:
                raise Revoked()
        clients = self._clients
        if clients:
            for client in (cap.client_id, *cap.actor_chain):
                before = clients.get(client)
                if before is not None and cap.issued_at < before:
                    raise Revoked()

    def ensure_current(self) -> None:
        """Start the poller if needed; raise :class:`IssuerUnavailable` if the list is too old to trust."""
        if self._stop.is_set():
            raise RuntimeError("the verifier is closed")
        self._ensure_thread()
        if self._fresh():
            return
        with self._poll_lock:
            last = self._last_attempt
            if not self._fresh() and (last is None or clock.monotonic() - last >= self.retry_interval):
                try:
                    self._poll_locked()
                except FetchError as exc:
                    log.warning("revocation feed poll failed (%s)", exc)
        if not self._fresh():
            raise IssuerUnavailable("the issuer's revocation list is out of date",
                                    retry_after=math.ceil(self.retry_interval))

    def _fresh(self) -> bool:
        last = self._last_success
        return last is not None and clock.monotonic() - last <= self.max_staleness

    # ------------------------------------------------------------------ polling

    def poll(self) -> None:
        """Poll the feed now; raise :class:`IssuerUnavailable` if it could not be read."""
        with self._poll_lock:
            try:
                self._poll_locked()
            except FetchError as exc:
                raise IssuerUnavailable(f"the revocation feed could not be read ({exc})") from None

    def _poll_locked(self) -> None:
        self._last_attempt = clock.monotonic()
        self.polls += 1
        endpoint = self._discovery.get().revocation_feed_endpoint
        if endpoint is None:
            if not self._warned_no_feed:
                log.warning("revocation polling is on, but the issuer advertises no revocation_feed_endpoint")
                self._warned_no_feed = True
            self._last_success = clock.monotonic()
            return
        url = endpoint
        if self._issued_at is not None:
            url += ("&" if "?" in endpoint else "?") + urlencode({"since": repr(self._issued_at - SINCE_OVERLAP)})
        body = fetch_bytes(url, timeout=self.timeout, allow_insecure_loopback=self.allow_insecure_loopback,
                           accept="application/jwt")
        now = clock.now()
        feed = _parse_feed(self._authentic(body, now))
        if feed.version < self.version:
            raise FetchError(f"revocation feed: version {feed.version} is older than the applied {self.version} "
                             "(a replayed feed)")
        jtis = _merge(self._jtis, feed.jtis, lambda exp: exp + self.leeway > now)
        subjects = _merge(self._subjects, feed.subjects, lambda t: t + SUBJECT_WINDOW > now)
        clients = _merge(self._clients, feed.clients, lambda t: t + SUBJECT_WINDOW > now)
        self._jtis, self._subjects, self._clients = jtis, subjects, clients
        self._issued_at = feed.issued_at
        self.version = feed.version
        self._last_success = clock.monotonic()

    def _authentic(self, body: bytes, now: float) -> dict[str, Any]:
        """The payload of a feed the issuer signed, for this issuer, recently."""
        try:
            doc = self._verify_signed(body.decode("ascii"))
        except (CapabilityError, UnicodeDecodeError) as exc:
            reason = exc.description if isinstance(exc, CapabilityError) else "not a compact JWS"
            raise FetchError(f"revocation feed rejected: {reason}") from None
        if doc.get("iss") != self._issuer:
            raise FetchError("revocation feed rejected: issued by another issuer")
        iat = doc.get("iat")
        if not _finite(iat) or not now - self.max_staleness - self.leeway <= iat <= now + self.leeway:  # type: ignore[operator]
            raise FetchError("revocation feed rejected: iat is not recent (a replayed or frozen feed)")
        return doc

    # ------------------------------------------------------------------ thread

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._thread_pid == pid:
            return
        with self._thread_lock:
            thread = self._thread
            if (thread is not None and thread.is_alive() and self._thread_pid == pid) or self._stop.is_set():
                return
            # Not started yet, or this is a forked child (threads do not survive fork).
            self._thread = threading.Thread(target=self._run, name="capability-revocation-poller", daemon=True)
            self._thread_pid = pid
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self._poll_lock:
                    self._poll_locked()
            except FetchError as exc:
                log.warning("revocation feed poll failed (%s); keeping the current list", exc)
            except Exception:  # never let the poller die silently
                log.exception("revocation feed poll crashed; will retry")

    def _after_fork_in_child(self) -> bool:
        self._poll_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._thread = None
        return True

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout=self.timeout + 1)

    @property
    def size(self) -> tuple[int, int, int]:
        """(revoked jtis, revoked subjects, revoked clients) currently held."""
        return len(self._jtis), len(self._subjects), len(self._clients)


def _merge(held: dict[str, float], new: dict[str, float], live: Callable[[float], bool]) -> dict[str, float]:
    """Copy on write: the entries still live, each at its latest time."""
    out = {k: t for k, t in held.items() if live(t)}
    for k, t in new.items():
        if live(t):
            out[k] = max(t, out.get(k, -math.inf))
    return out
