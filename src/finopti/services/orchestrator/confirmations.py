"""Confirmation tokens: nothing changes until the person who asked confirms the plan they were shown.

A token is a JWT (HS256, the orchestrator's own key in `$FINOPTI_HOME/orchestrator/`) that names the user, the
intent (agent, action, arguments), a digest of the plan and an expiry. It is single-use: its id is spent in a
small SQLite table when it is confirmed or cancelled, so a replay is refused even by another orchestrator
process (canary versions share the state directory). Every refusal is a `ConfirmationError` with its status:

| problem | status | error |
| --- | --- | --- |
| not a token of ours, or altered | 400 | `confirmation_invalid` |
| expired | 410 | `confirmation_expired` |
| another user's | 403 | `confirmation_not_yours` |
| already confirmed or cancelled | 409 | `confirmation_used` |
| the plan no longer holds (the instance changed) | 409 | `plan_changed` |
"""

import hashlib
import json
import os
import secrets
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import jwt

AUDIENCE = "finopti-confirmation"
ISSUER = "finopti-orchestrator"
DEFAULT_TTL = 300.0  # seconds: long enough to read a plan, short enough that it still holds


class ConfirmationError(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


@dataclass(frozen=True)
class Confirmation:
    id: str
    user: str
    agent: str
    action: str
    arguments: dict
    plan_digest: str
    expires_at: float


def plan_digest(agent: str, action: str, arguments: dict, plan: dict) -> str:
    """What a confirmation is bound to: the intent and the state the plan was made from."""
    bound = {"agent": agent, "action": action, "arguments": arguments, "before": plan.get("before"),
             "after": plan.get("after"), "changes": plan.get("changes")}
    return hashlib.sha256(json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _key(directory: Path) -> bytes:
    """The signing key, made once; made atomically so two processes starting together agree on it."""
    path = directory / "confirmation.key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".confirmation.key.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


class Confirmations:
    def __init__(self, directory: Path, ttl: float = DEFAULT_TTL):
        self.directory = Path(directory)
        self.ttl = ttl
        self.key = _key(self.directory)
        self.db = self.directory / "confirmations.db"
        with closing(self._connect()) as conn, conn:
            conn.execute("CREATE TABLE IF NOT EXISTS spent (id TEXT PRIMARY KEY, user TEXT NOT NULL, "
                         "action TEXT NOT NULL, outcome TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=30)

    def issue(self, user: str, agent: str, action: str, arguments: dict, plan: dict,
              now: float | None = None) -> tuple[str, Confirmation]:
        now = time.time() if now is None else now
        confirmation = Confirmation(uuid.uuid4().hex, user, agent, action, dict(arguments),
                                    plan_digest(agent, action, arguments, plan), now + self.ttl)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "jti": confirmation.id, "iat": int(now),
                  "exp": int(confirmation.expires_at), "agent": agent, "action": action, "arguments": arguments,
                  "plan": confirmation.plan_digest}
        return jwt.encode(claims, self.key, algorithm="HS256"), confirmation

    def check(self, token: str, user: str, now: float | None = None) -> Confirmation:
        """The confirmation a token carries, if it may be used by `user` now (not yet spent)."""
        now = time.time() if now is None else now
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER,
                                options={"verify_exp": False, "require": ["exp", "jti", "sub"]})
            confirmation = Confirmation(claims["jti"], claims["sub"], claims["agent"], claims["action"],
                                        dict(claims["arguments"]), claims["plan"], float(claims["exp"]))
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
            raise ConfirmationError(400, "confirmation_invalid", "this confirmation token was not issued by the "
                                    "assistant or has been altered; ask again to get a new plan") from None
        if confirmation.expires_at <= now:
            raise ConfirmationError(410, "confirmation_expired", f"this confirmation expired "
                                    f"{int(now - confirmation.expires_at)} s ago; ask again to get a new plan")
        if confirmation.user != user:
            raise ConfirmationError(403, "confirmation_not_yours", "this confirmation was issued to another user; "
                                    "only the person who asked can confirm it")
        spent = self.spent(confirmation.id)
        if spent:
            raise ConfirmationError(409, "confirmation_used", f"this confirmation was already {spent}; "
                                    "a confirmation works once")
        return confirmation

    def spent(self, confirmation_id: str) -> str | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT outcome FROM spent WHERE id = ?", (confirmation_id,)).fetchone()
        return row[0] if row else None

    def spend(self, confirmation: Confirmation, outcome: str) -> None:
        """Mark it used ('confirmed' or 'cancelled'); only one caller ever succeeds for a given token."""
        try:
            with closing(self._connect()) as conn, conn:
                conn.execute("INSERT INTO spent VALUES (?, ?, ?, ?, ?, ?)",
                             (confirmation.id, confirmation.user, confirmation.action, outcome, time.time(),
                              confirmation.expires_at))
                # Spent ids are only needed while their token could still be presented.
                conn.execute("DELETE FROM spent WHERE expires < ?", (time.time() - 86400,))
        except sqlite3.IntegrityError:
            raise ConfirmationError(409, "confirmation_used", f"this confirmation was already "
                                    f"{self.spent(confirmation.id)}; a confirmation works once") from None
