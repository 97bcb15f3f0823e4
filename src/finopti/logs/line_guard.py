"""Two checks on every collected line, kept apart from the collector's reading and pushing.

- **Own traffic.** The collector's pushes go through the gateway, so each push causes lines (the gateway's
  access line, the policy's decision, the store's request line) that would be pushed in turn: a loop that
  never idles. Those lines are recognised by the verified mesh identity of the caller, the `source` field,
  which only the gateway fills from a client certificate (the access log's peer URI SAN; the services and the
  policy read the x-forwarded-client-cert the mesh listener sets). Never by an id or header a client chooses:
  a user who could make their own lines look like the collector's would vanish from the audit trail.
- **Redaction.** A credential that reached a log line anyway (a token in a URL, an Authorization or Cookie
  value, a bare JWT, a password in a URL) is replaced with `[REDACTED]` before the line leaves the machine:
  the second line of defence behind the gateway, like Alloy's `stage.replace`. Replacements contain no quote
  or backslash, so a JSON line stays valid JSON.
"""

import re
from bisect import bisect_right
from itertools import accumulate
from pathlib import Path

import ahocorasick_rs

from finopti.mesh.edge_rules import CREDENTIAL_WORDS, REDACTED
from finopti.pki import identity_from_spiffe

# --- own traffic ------------------------------------------------------------------------------------------


def own_sources(spiffe_id: str | None) -> frozenset[str]:
    """The `source` values of lines caused by a caller with this SPIFFE id: the id itself (gateway access
    lines) and the mesh identity name (what the policy and the services log)."""
    if not spiffe_id:
        return frozenset()
    name = identity_from_spiffe(spiffe_id)
    return frozenset({spiffe_id, name} if name else {spiffe_id})


def identity_of_certificate(cert: Path | str | None) -> str | None:
    """The SPIFFE id in a certificate's URI SAN (the collector's own, from FINOPTI_TLS_CERT)."""
    if not cert:
        return None
    from finopti.pki import cert_info

    return cert_info(Path(cert))["spiffe_id"]


# --- redaction ---------------------------------------------------------------------------------------------

_WORDS = tuple(CREDENTIAL_WORDS) + ("cookie",)
# Cheap first look, on the hot path of the collector (a few substring tests of the lower-cased line, no regex):
# every form below needs one of these. A JWT starts with "eyJ"; a query parameter, a cookie or base64 padding has
# "="; Authorization values name their scheme; JSON fields named like a credential end in these letters. Most
# lines hold none of them and are left untouched.
_MARKS = ("eyj", "=", "earer ", "asic ", "assw", "ecret", 'oken"', 'key"')
_BYTE_MARKS = tuple(m.encode() for m in _MARKS)
# All the marks in one pass over a chunk (Aho-Corasick), instead of one pass per mark: the collector's reader spent a
# fifth of its time on those eight passes.
_MARK_AUTOMATON = ahocorasick_rs.BytesAhoCorasick(list(_BYTE_MARKS))

# Runs of the JWT alphabet and its dots: a JWT is looked for inside each, once (see `_redact_jwts`).
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_.-]+")
_SCHEME = re.compile(r"\b([Bb]earer|BEARER|[Bb]asic|BASIC) +(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}")
_PARAMETER = re.compile(r"([?&;])([^=&;\s\"\\#]*)=([^&;\s\"\\#]*)")
_JSON_STRING_FIELD = re.compile(r'"([A-Za-z0-9_.-]{1,64})"(\s*:\s*)"((?:[^"\\]|\\.)*)"')
_URL_PASSWORD = re.compile(r"://[^/\s\"@:]+:[^/\s\"@]+@")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def _is_credential_name(name: str) -> bool:
    name = _PERCENT.sub(lambda m: chr(int(m[1], 16)), name).lower()
    return any(word in name for word in _WORDS)


def _has_mark(line: str | bytes, marks: tuple) -> bool:
    for mark in marks:
        if mark in line:
            return True
    return False


def lines_with_marks(lines: list[bytes]) -> set[int]:
    """The indexes of the lines that hold one of the marks (the only ones `redact_bytes` rewrites): one search over
    a whole chunk of lines for all the marks at once, several times cheaper than a search per line. The marks are
    lower-case, so the chunk is searched lower-cased, like a single line (`suspect`). No mark holds a newline, so
    none is found across two lines, and a match that hides an overlapping one is in the same line."""
    found = _MARK_AUTOMATON.find_matches_as_indexes(b"\n".join(lines).lower())
    if not found:
        return set()
    ends = list(accumulate(map((1).__add__, map(len, lines))))
    return {bisect_right(ends, start) for _, start, _ in found}


def suspect(raw: bytes) -> bool:
    """Whether redaction must look at this line: one of the marks is in it, in any letter case."""
    return _has_mark(raw.lower(), _BYTE_MARKS)


def redact_bytes(raw: bytes) -> tuple[bytes, dict[str, int]]:
    """`redact` for a UTF-8 line as the collector reads it: decoded only when one of the marks is in it."""
    if not suspect(raw):
        return raw, {}
    text, counts = _rewrite(raw.decode(errors="replace"))
    return (text.encode(), counts) if counts else (raw, counts)


def redact(text: str) -> tuple[str, dict[str, int]]:
    """The line with credentials replaced, and how many of each kind were replaced (empty: untouched)."""
    if not _has_mark(text.lower(), _MARKS):
        return text, {}
    return _rewrite(text)


def _jwts_in_run(run: str) -> tuple[str, int]:
    if "eyJ" not in run:
        return run, 0
    parts, out, i, count = run.split("."), [], 0, 0
    while i < len(parts):
        at = parts[i].find("eyJ")
        if at >= 0 and len(parts[i]) - at >= 7 and i + 2 < len(parts) and parts[i + 1].startswith("eyJ") \
                and len(parts[i + 1]) >= 7:
            out.append(parts[i][:at] + REDACTED)
            count, i = count + 1, i + 3
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out), count


def _redact_jwts(text: str) -> tuple[str, int]:
    """JWTs replaced, and how many: a header and a payload of base64url JSON ("eyJ" and at least four more
    characters; the header's "eyJ" anywhere in its segment), a dot after each, then the signature. One pass over
    runs of the token alphabet split at their dots, as the gateways' Lua scanner does: a pattern tried at every
    "eyJ" was quadratic on a line of "eyJeyJ…" (1.8 s for a 57 KB path a client sent)."""
    total = 0

    def run(m: re.Match) -> str:
        nonlocal total
        redacted, count = _jwts_in_run(m[0])
        total += count
        return redacted

    return _TOKEN_RUN.sub(run, text), total


def _named_values(pattern: re.Pattern, text: str, name: int, value: int, kind: str, counts: dict[str, int]) -> str:
    """Replace the `value` group of each match whose `name` group is named like a credential."""
    def replace(m: re.Match) -> str:
        if not m[value] or m[value] == REDACTED or not _is_credential_name(m[name]):
            return m[0]
        counts[kind] = counts.get(kind, 0) + 1
        return m[0][:m.start(value) - m.start()] + REDACTED + m[0][m.end(value) - m.start():]

    return pattern.sub(replace, text)


def _rewrite(text: str) -> tuple[str, dict[str, int]]:
    counts: dict[str, int] = {}
    if "=" in text:  # query or form parameters named like a credential
        text = _named_values(_PARAMETER, text, 2, 3, "query_parameter", counts)
    lower = text.lower()
    if any(word in lower for word in _WORDS):  # a JSON field that holds a credential (a header dump, a body)
        text = _named_values(_JSON_STRING_FIELD, text, 1, 3, "json_field", counts)
    for pattern, replacement, kind, needed in (
        (_SCHEME, rf"\g<1> {REDACTED}", "authorization", ("earer ", "EARER ", "asic ", "ASIC ")),
        (_redact_jwts, None, "jwt", ("eyJ",)),
        (_URL_PASSWORD, f"://{REDACTED}@", "url_password", ("@",)),
    ):
        if any(n in text for n in needed):
            text, n = pattern(text) if replacement is None else pattern.subn(replacement, text)
            if n:
                counts[kind] = counts.get(kind, 0) + n
    return text, counts
