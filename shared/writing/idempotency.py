"""Idempotent writes, as Stripe designed them: a write sent with an `Idempotency-Key` is done
once; its response is kept, in the same transaction as the write, and replayed byte for byte
to the same caller sending the same key with the same request for 24 hours.

- The key is the caller's own (unique per token subject), 1 to 255 printable ASCII
  characters (KEY_PATTERN).
- The same key with another method, path or body is a 422: a key names one request.
- Concurrent requests with one key queue on a transaction-level advisory lock of (subject,
  key): the first writes and keeps its response; the others then find it and replay it.
- Only successful responses are kept: a refused write wrote nothing, so sending it again
  with the same key runs it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from fastapi import Request, Response

from shared.errors import Problem

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# printable ASCII, without a space at either end (HTTP strips those from a header's value): what
# the server accepts and what OpenAPI documents, one pattern
KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"
_KEY = re.compile(KEY_PATTERN)
LIFETIME = dt.timedelta(hours=24)
# the response headers kept and replayed with a response (the rest are the service's own)
KEPT_HEADERS = ("content-type", "location", "etag", "link", "masked-columns")
_PURGE_BATCH = 100


class InvalidIdempotencyKey(Problem):
    status = 400
    code = "invalid_idempotency_key"
    title = "Invalid idempotency key"


class IdempotencyKeyReused(Problem):
    status = 422
    code = "idempotency_key_reused"
    title = "Idempotency key reused"


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, or None; a 400 if it is empty, too long or repeated."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKey(
            f"The {HEADER} header is given {len(values)} times; give it once."
        )
    key = values[0]
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"The {HEADER} header has {len(key)} characters; it must have 1 to {MAX_KEY_LENGTH}.",
            length=len(key),
        )
    if not _KEY.fullmatch(key):  # not match: `$` would let a final newline through
        raise InvalidIdempotencyKey(
            f"The {HEADER} header may hold printable ASCII characters only (from '!' to '~', "
            "and spaces between them)."
        )
    return key


@dataclass(frozen=True)
class Fingerprint:
    """What makes two requests the same request: method, path with query, and body (with
    its content type) as sent."""

    method: str
    path: str
    body_hash: str

    @classmethod
    def of(cls, request: Request, body: bytes) -> Fingerprint:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        digest = hashlib.sha256()
        digest.update(request.headers.get("content-type", "").encode("latin-1"))
        digest.update(b"\x00")
        digest.update(body)
        return cls(request.method, path, digest.hexdigest())


@dataclass(frozen=True)
class KeptResponse:
    """A response kept under a key."""

    fingerprint: Fingerprint
    status: int
    headers: dict[str, str]
    body: bytes
    created_at: dt.datetime

    def replay(self, request: Fingerprint, key: str) -> Response:
        """The kept response again, marked replayed; a 422 if the key named another request."""
        kept = self.fingerprint
        if (kept.method, kept.path) != (request.method, request.path):
            raise IdempotencyKeyReused(
                f"The {HEADER} '{key}' was used for {kept.method} {kept.path}; a key names one "
                f"request, and this is {request.method} {request.path}. Use a new key.",
            )
        if kept.body_hash != request.body_hash:
            raise IdempotencyKeyReused(
                f"The {HEADER} '{key}' was used with another body for {kept.method} "
                f"{kept.path}; a key names one request. Use a new key.",
            )
        return Response(
            self.body, status_code=self.status, headers={**self.headers, REPLAYED: "true"}
        )


async def lock_key(conn: asyncpg.Connection, subject: str, key: str) -> None:
    """Hold the (subject, key) lock until the transaction ends: requests with one key queue."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"idempotency:{len(subject)}:{subject}:{key}",
    )


async def kept_response(conn: asyncpg.Connection, subject: str, key: str) -> KeptResponse | None:
    """The response kept under the caller's key within its lifetime, if any."""
    row = await conn.fetchrow(
        "SELECT method, path, body_hash, status, response_headers::text AS headers, "
        "response_body, created_at FROM idempotency_keys "
        "WHERE subject = $1 AND key = $2 AND created_at > now() - $3::interval",
        subject,
        key,
        LIFETIME,
    )
    if row is None:
        return None
    headers: dict[str, Any] = orjson.loads(row["headers"])
    return KeptResponse(
        Fingerprint(row["method"], row["path"], row["body_hash"]),
        row["status"],
        {str(k): str(v) for k, v in headers.items()},
        bytes(row["response_body"]),
        row["created_at"],
    )


async def keep_response(
    conn: asyncpg.Connection, subject: str, key: str, request: Fingerprint, response: Response
) -> None:
    """Keep a successful response under the key (replacing an expired one), and forget a few
    expired keys of anyone."""
    headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
    await conn.execute(
        """
        INSERT INTO idempotency_keys
            (subject, key, method, path, body_hash, status, response_headers, response_body)
        VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8)
        ON CONFLICT (subject, key) DO UPDATE SET
            method = EXCLUDED.method, path = EXCLUDED.path, body_hash = EXCLUDED.body_hash,
            status = EXCLUDED.status, response_headers = EXCLUDED.response_headers,
            response_body = EXCLUDED.response_body, created_at = now()
        """,
        subject,
        key,
        request.method,
        request.path,
        request.body_hash,
        response.status_code,
        orjson.dumps(headers).decode(),
        bytes(response.body),
    )
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM idempotency_keys WHERE created_at <= now() - $1::interval "
        "LIMIT $2 FOR UPDATE SKIP LOCKED))",
        LIFETIME,
        _PURGE_BATCH,
    )
