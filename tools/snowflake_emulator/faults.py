"""Faults at the endpoint, for tests: statements refused for a while, OAuth tokens expired.

``refuse(pattern, seconds)`` answers every query whose SQL matches ``pattern`` with HTTP 503
(what a proxy or a blocked route gives): the real connector retries it until its
``network_timeout`` and raises, exactly as against an unreachable Snowflake. ``expire_tokens``
makes the login refuse the container tokens issued so far, as Snowflake does when the token file
has been refreshed and a client still holds the old one.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass


@dataclass
class Refusal:
    pattern: re.Pattern
    until: float | None  # monotonic; None: until lifted
    status: int = 503
    hits: int = 0
    seconds: float | None = None
    from_first_hit: bool = False


class FaultsMixin:
    def _init_faults(self) -> None:
        self._faults_lock = threading.Lock()
        self.refusals: list[Refusal] = []
        self.logins: list[str] = []  # "oauth:<token>" or "password:<user>", in order
        self.expired_tokens: set[str] = set()

    def refuse(
        self,
        pattern: str,
        seconds: float | None = None,
        status: int = 503,
        from_first_hit: bool = False,
    ) -> Refusal:
        """Answer queries matching ``pattern`` (regex, case-insensitive, searched in the SQL)
        with HTTP ``status`` for ``seconds`` (None: until :meth:`lift`), counted from now or,
        with ``from_first_hit``, from the first query it refuses."""
        until = None if seconds is None or from_first_hit else time.monotonic() + seconds
        refusal = Refusal(
            re.compile(pattern, re.I | re.S), until, status, 0, seconds, from_first_hit
        )
        with self._faults_lock:
            self.refusals.append(refusal)
        return refusal

    def lift(self, refusal: Refusal | None = None) -> None:
        with self._faults_lock:
            self.refusals = [r for r in self.refusals if refusal is not None and r is not refusal]

    def refused(self, sql: str) -> int | None:
        """The HTTP status to answer ``sql`` with, or None."""
        now = time.monotonic()
        with self._faults_lock:
            self.refusals = [r for r in self.refusals if r.until is None or r.until > now]
            for refusal in self.refusals:
                if refusal.pattern.search(sql):
                    if refusal.from_first_hit and refusal.until is None and refusal.seconds:
                        refusal.until = now + refusal.seconds
                    refusal.hits += 1
                    return refusal.status
        return None

    def expire_tokens(self, tokens) -> None:
        with self._faults_lock:
            self.expired_tokens |= {t.strip() for t in tokens}

    def login_refused(self, data: dict) -> str | None:
        """Record a login; a message when its OAuth token has expired."""
        fields = data.get("data") or {}
        if str(fields.get("AUTHENTICATOR", "")).upper() == "OAUTH":
            token = str(fields.get("TOKEN", "")).strip()
            with self._faults_lock:
                self.logins.append(f"oauth:{token}")
                if token in self.expired_tokens:
                    return "OAuth access token expired. [390318]"
        else:
            with self._faults_lock:
                self.logins.append(f"password:{fields.get('LOGIN_NAME', '')}")
        return None
