"""The issuer's revocation feed, polled by a background thread.

Feed contract (``revocation_feed_endpoint`` in the issuer metadata)::

    GET {endpoint}?since=<float>
    {"issued_at": <float>,
     "jtis":     [{"jti": str, "exp": int}],
     "subjects": [{"sub_sha256": base64url(sha256(sub)), "revoked_before": int}]}

The first poll asks for everything still live (no ``since``); later polls ask
from ``previous issued_at - 5`` so clock skew between issuer replicas cannot
drop an entry.  A capability is revoked when its ``jti`` is listed, or when a
subject entry matches its ``sub`` and it was issued before ``revoked_before``.
Entries are kept only while they can matter: a ``jti`` until its token expires
(plus leeway), a subject entry an hour after ``revoked_before`` (longer than
any capability lives).

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
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ... import clock
from ._capability import Capability
from ._discovery import Discovery
from ._http import FetchError, fetch_json
from .errors import IssuerUnavailable, Revoked

__all__ = ["SUBJECT_WINDOW", "RevocationPoller", "sub_digest"]

log = logging.getLogger("issuer.sdk.verifier")

#: How long a subject entry is kept after ``revoked_before``.
SUBJECT_WINDOW = 3600
#: ``since`` is the previous ``issued_at`` minus this many seconds.
SINCE_OVERLAP = 5.0


def sub_digest(sub: str) -> str:
    """base64url(SHA-256(sub, UTF-8)) without padding: how the feed names a user."""
    return base64.urlsafe_b64encode(hashlib.sha256(sub.encode("utf-8")).digest()).rstrip(b"=").decode()


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _parse_feed(doc: Any) -> tuple[float, dict[str, float], dict[str, float]]:
    """Validate a whole feed answer; one malformed entry rejects it all (the old state is kept)."""
    if not isinstance(doc, Mapping) or not _finite(doc.get("issued_at")):
        raise FetchError("revocation feed: not a feed document")
    jtis: dict[str, float] = {}
    subjects: dict[str, float] = {}
    raw_jtis = doc.get("jtis", [])
    raw_subjects = doc.get("subjects", [])
    if not isinstance(raw_jtis, list) or not isinstance(raw_subjects, list):
        raise FetchError("revocation feed: jtis and subjects must be arrays")
    for entry in raw_jtis:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("jti"), str) or not _finite(entry.get("exp")):
            raise FetchError("revocation feed: malformed jti entry")
        jtis[entry["jti"]] = max(float(entry["exp"]), jtis.get(entry["jti"], -math.inf))
    for entry in raw_subjects:
        if (not isinstance(entry, Mapping) or not isinstance(entry.get("sub_sha256"), str)
                or not _finite(entry.get("revoked_before"))):
            raise FetchError("revocation feed: malformed subject entry")
        h = entry["sub_sha256"]
        subjects[h] = max(float(entry["revoked_before"]), subjects.get(h, -math.inf))
    return float(doc["issued_at"]), jtis, subjects


class RevocationPoller:
    """Revocation state for one verifier, kept current by a daemon thread."""

    def __init__(
        self,
        discovery: Discovery,
        *,
        interval: float,
        timeout: float,
        leeway: float,
        allow_insecure_loopback: bool,
        retry_interval: float,
    ) -> None:
        self._discovery = discovery
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
        self._issued_at: float | None = None
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
        doc = fetch_json(url, timeout=self.timeout, allow_insecure_loopback=self.allow_insecure_loopback)
        issued_at, new_jtis, new_subjects = _parse_feed(doc)
        now = clock.now()
        jtis = {j: exp for j, exp in self._jtis.items() if exp + self.leeway > now}
        for j, exp in new_jtis.items():
            if exp + self.leeway > now:
                jtis[j] = max(exp, jtis.get(j, -math.inf))
        subjects = {h: t for h, t in self._subjects.items() if t + SUBJECT_WINDOW > now}
        for h, t in new_subjects.items():
            if t + SUBJECT_WINDOW > now:
                subjects[h] = max(t, subjects.get(h, -math.inf))
        self._jtis, self._subjects = jtis, subjects
        self._issued_at = issued_at
        self._last_success = clock.monotonic()

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
    def size(self) -> tuple[int, int]:
        """(revoked jtis, revoked subjects) currently held."""
        return len(self._jtis), len(self._subjects)
