"""The W3C Trace Context `traceparent` header, parsed exactly as the Recommendation says.

    traceparent = version "-" trace-id "-" parent-id "-" trace-flags      (55 characters for version 00)

- Every field is lowercase hex; uppercase is invalid.
- Version `ff` is invalid. Version `00` has exactly these four fields: anything after them is invalid.
- A higher version is read by its first four fields, which must then be followed by the end or a `-`
  (what a later version appends is ignored); shorter than 55 characters is invalid.
- An all-zero trace-id or parent-id is invalid.
- Several `traceparent` headers on one request are invalid (the caller passes them all).

An invalid header means "start a new trace": the gateway drops it before its tracer runs (see
`finopti.mesh.envoy_edge`), and a service that received one anyway starts a new trace too.
"""

import re
from dataclasses import dataclass

HEADER = "traceparent"
_LENGTH = 55
_FIELDS = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True)
class TraceParent:
    version: int
    trace_id: str  # 32 lowercase hex
    parent_id: str  # 16 lowercase hex
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def header(self) -> str:
        """As this implementation sends it onward: version 00."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}"


def parse_traceparent(values: str | list[str] | tuple[str, ...] | None) -> TraceParent | None:
    """The parsed header, or None when it is absent or invalid (then a new trace starts)."""
    if isinstance(values, list | tuple):
        if len(values) != 1:
            return None
        values = values[0]
    if not isinstance(values, str):
        return None
    value = values.strip(" \t")  # optional whitespace around an HTTP field value is not part of it
    if len(value) < _LENGTH:
        return None
    match = _FIELDS.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if version == "00" and len(value) != _LENGTH:
        return None
    if len(value) > _LENGTH and value[_LENGTH] != "-":
        return None
    return TraceParent(int(version, 16), trace_id, parent_id, int(flags, 16))
