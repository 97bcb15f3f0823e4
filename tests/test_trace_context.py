"""W3C Trace Context: the same table of the Recommendation's cases (and the w3c/trace-context test suite's)
through the services' parser and through the real gateway. A valid header is continued; an invalid one
starts a new trace, and then every line of the request (gateway access line, authz decision, services)
carries that one new trace id."""

import socket

import httpx
import pytest

from finopti.telemetry.context import extract_trace
from finopti.telemetry.traceparent import parse_traceparent

T = "4bf92f3577b34da6a3ce929d0e0e4736"
P = "00f067aa0ba902b7"

# (name, traceparent header values, the trace id it continues or None for a new trace)
CASES = [
    ("valid v00 sampled", [f"00-{T}-{P}-01"], T),
    ("valid v00 not sampled", [f"00-{T}-{P}-00"], T),
    ("valid v00 unknown flag bits", [f"00-{T}-{P}-ff"], T),
    ("surrounding whitespace", [f"  00-{T}-{P}-01\t"], T),
    ("higher version, more fields", [f"cc-{T}-{P}-01-what-the-future-will-be-like"], T),
    ("higher version, exact length", [f"01-{T}-{P}-01"], T),
    ("version ff", [f"ff-{T}-{P}-01"], None),
    ("uppercase trace id", [f"00-{T.upper()}-{P}-01"], None),
    ("uppercase parent id", [f"00-{T}-{P.upper()}-01"], None),
    ("uppercase version", [f"0A-{T}-{P}-01"], None),
    ("uppercase flags", [f"00-{T}-{P}-0A"], None),
    ("all-zero trace id", [f"00-{'0' * 32}-{P}-01"], None),
    ("all-zero parent id", [f"00-{T}-{'0' * 16}-01"], None),
    ("v00 with trailing data", [f"00-{T}-{P}-01-extra"], None),
    ("v00 with one more character", [f"00-{T}-{P}-010"], None),
    ("higher version, no dash after flags", [f"cc-{T}-{P}-01.what-the-future"], None),
    ("short version", [f"0-{T}-{P}-01"], None),
    ("long version", [f"000-{T}-{P}-01"], None),
    ("short trace id", [f"00-{T[:-1]}-{P}-01"], None),
    ("long trace id", [f"00-{T}0-{P}-01"], None),
    ("short parent id", [f"00-{T}-{P[:-1]}-01"], None),
    ("short flags", [f"00-{T}-{P}-1"], None),
    ("non-hex trace id", [f"00-{T[:-1]}g-{P}-01"], None),
    ("non-hex version", [f"0x-{T}-{P}-01"], None),
    ("wrong separator", [f"00_{T}_{P}_01"], None),
    ("empty", [""], None),
    ("garbage", ["hello"], None),
    ("two headers", [f"00-{T}-{P}-01", f"00-{T}-{P}-01"], None),
]


@pytest.mark.parametrize("values, continued", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_services_parse_traceparent_by_the_spec(values, continued):
    parsed = parse_traceparent(values)
    assert (parsed.trace_id if parsed else None) == continued
    context = extract_trace([("traceparent", v) for v in values] + [("tracestate", "rojo=00f067aa0ba902b7")])
    assert bool(context) == (continued is not None)  # an empty context: the service starts a new trace


def test_a_higher_version_is_sent_on_as_version_00():
    parsed = parse_traceparent(f"cc-{T}-{P}-01-future")
    assert parsed is not None and parsed.version == 0xCC and parsed.sampled
    assert parsed.header() == f"00-{T}-{P}-01"


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange written byte for byte: clients like httpx refuse to send some of what we test
    (whitespace around a value, duplicated fields)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        status_line, *fields = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        # Read the body by its length, not to the end of the connection: after answering early, Envoy keeps
        # the connection a moment for the rest of a request body.
        if headers.get("transfer-encoding") == "chunked":
            while not rest.endswith(b"0\r\n\r\n") and (chunk := sock.recv(65536)):
                rest += chunk
            return int(status_line.split()[1]), headers, _dechunk(rest)
        length = int(headers.get("content-length", "0"))
        while len(rest) < length and (chunk := sock.recv(65536)):
            rest += chunk
    return int(status_line.split()[1]), headers, rest


def _dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        if int(size, 16) == 0:
            return body
        body, data = body + data[:int(size, 16)], data[int(size, 16) + 2:]


def _access_line(platform, request_id: str) -> dict:
    lines = platform.wait_for_log("gateway", lambda line: line.get("request_id") == request_id
                                  and line.get("listener") == "edge")
    assert lines, f"no edge access line for request {request_id}"
    return lines[0]


@pytest.mark.parametrize("values, continued", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_gateway_applies_the_same_rules(platform, values, continued):
    """The anonymous chat page: the gateway's access line and the ui's request line share one trace id, the
    client's when valid, a new one otherwise."""
    fields = "".join(f"traceparent: {v}\n" for v in values)
    status, headers, _ = raw_request(platform.edge_port, f"GET / HTTP/1.1\nHost: 127.0.0.1\n{fields}"
                                     "Connection: close\n")
    assert status == 200
    request_id = headers["x-request-id"]
    access = _access_line(platform, request_id)
    trace_id = access["trace_id"]
    assert trace_id and len(trace_id) == 32 and trace_id != "0" * 32
    assert (trace_id == T) == (continued is not None)
    ui = platform.wait_for_log("ui", lambda line: line.get("request_id") == request_id
                               and line.get("event") == "request_completed")
    assert [line["trace_id"] for line in ui] == [trace_id]


@pytest.mark.parametrize("traceparent", [f"ff-{T}-{P}-01", f"00-{T.upper()}-{P}-01", f"00-{T}-{P}-01"],
                         ids=["version ff", "uppercase", "valid"])
def test_every_line_of_an_ask_carries_the_one_trace_id(platform, traceparent):
    """Probe 5 of issue 11: the edge's access line, the edge's authz decision and every service line."""
    response = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "list buckets"},
                          headers={**platform.headers(), "traceparent": traceparent}, timeout=60)
    assert response.status_code == 200, response.text
    trace_id, request_id = response.json()["trace_id"], response.headers["x-request-id"]
    assert (trace_id == T) == traceparent.startswith("00-" + T)
    edge = _access_line(platform, request_id)
    # The gateway's own authorization decides in-proxy: its decision is part of each hop's access line.
    assert edge["trace_id"] == trace_id and edge["authz"] == "allowed"
    hops = platform.wait_for_log("gateway", lambda line: line.get("request_id") == request_id,
                                 until=lambda found: len(found) >= 3)
    assert {line["listener"] for line in hops} == {"edge", "mesh"} and {line["trace_id"] for line in hops} == {trace_id}
    # Routes decided by the Rego policy (authz: rego) log a decision line of the policy service: the same trace.
    decisions = [line for line in platform.log_lines("policy") if line.get("request_id") == request_id]
    assert {line["trace_id"] for line in decisions} <= {trace_id}
    for service in ("orchestrator", "gcloud-agent", "gcloud-tools"):
        lines = platform.wait_for_log(service, lambda line: line.get("request_id") == request_id)
        assert lines and {line["trace_id"] for line in lines} == {trace_id}, service
