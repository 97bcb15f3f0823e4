"""Mesh PKI: file layout, certificate contents, chain of trust, rotation, and real mTLS handshakes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import queue
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from finopti import pki
from finopti.pki import (
    MeshPki,
    PkiError,
    cert_info,
    ensure_pki,
    identity_from_spiffe,
    make_foreign_ca_cert,
    rotate,
    spiffe_id,
)
from finopti.pki import core as pki_core

NAMES = ["gateway", "orchestrator", "gcloud-agent", "prometheus", "cli"]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mtime of every PEM file, to prove a call wrote nothing."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.glob("*.*")) if p.is_file()}


@pytest.fixture
def mesh(tmp_path: Path) -> MeshPki:
    return ensure_pki(tmp_path / "pki", NAMES)


# --- layout, idempotency -----------------------------------------------------------------------------


def test_creates_expected_files(mesh: MeshPki) -> None:
    expected = {"ca.crt", "ca.key"} | {f"{n}.{ext}" for n in NAMES for ext in ("crt", "key")}
    assert {p.name for p in mesh.pki_dir.iterdir() if not p.name.startswith(".")} == expected
    assert not list(mesh.pki_dir.glob(".*.tmp")), "temp files must not be left behind"
    assert mesh.ca_cert == mesh.pki_dir / "ca.crt"
    assert mesh.identities == tuple(NAMES)
    assert mesh.paths("gateway") == (mesh.pki_dir / "gateway.crt", mesh.pki_dir / "gateway.key")
    assert mesh.spiffe_id("cli") == "spiffe://finopti.local/svc/cli"


def test_second_call_changes_nothing(mesh: MeshPki) -> None:
    before = snapshot(mesh.pki_dir)
    again = ensure_pki(mesh.pki_dir, NAMES)
    assert snapshot(mesh.pki_dir) == before
    assert again == mesh


def test_missing_identity_is_added_without_touching_others(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    ensure_pki(d, ["gateway"])
    before = snapshot(d)
    ensure_pki(d, ["gateway", "cli"])
    after = snapshot(d)
    assert {k: v for k, v in after.items() if not k.startswith("cli.")} == before
    load(d / "cli.crt").verify_directly_issued_by(load(d / "ca.crt"))


def test_deleted_leaf_is_reissued(mesh: MeshPki) -> None:
    cert_path, key_path = mesh.paths("orchestrator")
    key_path.unlink()
    ensure_pki(mesh.pki_dir, NAMES)
    assert key_path.exists()
    leaf = load(cert_path)
    leaf.verify_directly_issued_by(load(mesh.ca_cert))
    key = pki_core._read_key(key_path)
    assert pki_core._spki(key.public_key()) == pki_core._spki(leaf.public_key())


def test_leaf_expiring_within_24h_is_reissued(mesh: MeshPki, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_before = mesh.ca_cert.read_bytes()
    serial_before = load(mesh.paths("gateway")[0]).serial_number
    real_now = pki_core._now()
    # 6 days 12 hours later, the 7-day leaf has ~12 h left (< 24 h); the 365-day CA is fine.
    monkeypatch.setattr(pki_core, "_now", lambda: real_now + dt.timedelta(days=6, hours=12))
    assert pki_core._leaf_is_current(mesh, "gateway", load(mesh.ca_cert)) is False
    ensure_pki(mesh.pki_dir, NAMES)
    leaf = load(mesh.paths("gateway")[0])
    assert leaf.serial_number != serial_before
    assert leaf.not_valid_after_utc > real_now + dt.timedelta(days=13)
    assert mesh.ca_cert.read_bytes() == ca_before


def test_leaf_with_more_than_24h_left_is_kept(mesh: MeshPki, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(mesh.pki_dir)
    real_now = pki_core._now()
    monkeypatch.setattr(pki_core, "_now", lambda: real_now + dt.timedelta(days=5))
    ensure_pki(mesh.pki_dir, NAMES)
    assert snapshot(mesh.pki_dir) == before


def test_leaf_from_another_ca_is_replaced(mesh: MeshPki) -> None:
    # Someone dropped a foreign cert in place of a mesh one: ensure_pki must not trust it.
    foreign_crt, foreign_key = make_foreign_ca_cert(mesh.pki_dir / "x", "cli")
    cert_path, key_path = mesh.paths("cli")
    os.replace(foreign_crt, cert_path)
    os.replace(foreign_key, key_path)
    ensure_pki(mesh.pki_dir, NAMES)
    load(cert_path).verify_directly_issued_by(load(mesh.ca_cert))


# --- CA and leaf contents ----------------------------------------------------------------------------


def test_ca_certificate(mesh: MeshPki) -> None:
    ca = load(mesh.ca_cert)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "FinOptiAgents mesh CA"
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)  # self-signed
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True and bc.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == dt.timedelta(days=365)


@pytest.mark.parametrize("name", NAMES)
def test_leaf_certificate_contents(mesh: MeshPki, name: str) -> None:
    leaf = load(mesh.paths(name)[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://finopti.local/svc/{name}"]
    assert san.get_values_for_type(x509.DNSName) == [name, "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.public_key().curve.name == "secp256r1"
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=7)


def test_validity_days_is_honoured(tmp_path: Path) -> None:
    m = ensure_pki(tmp_path, ["gateway"], validity_days=3)
    leaf = load(m.paths("gateway")[0])
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=3)


@pytest.mark.parametrize("name", NAMES)
def test_leaf_chains_to_mesh_ca(mesh: MeshPki, name: str) -> None:
    ca, leaf = load(mesh.ca_cert), load(mesh.paths(name)[0])
    assert leaf.issuer == ca.subject
    # Explicit ECDSA check of the leaf's signature with the CA public key ...
    ca.public_key().verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )
    # ... and the library's issuer check (name + signature).
    leaf.verify_directly_issued_by(ca)


def test_key_files_are_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)  # os.open's explicit mode, not the umask, must keep keys private
    try:
        m = ensure_pki(tmp_path / "pki", NAMES)
        rotate(m.pki_dir, NAMES)
    finally:
        os.umask(old)
    keys = sorted(m.pki_dir.glob("*.key"))
    assert len(keys) == len(NAMES) + 1
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(m.ca_cert.stat().st_mode) == 0o644


def test_world_readable_key_is_replaced(mesh: MeshPki) -> None:
    cert_path, key_path = mesh.paths("gateway")
    old_serial = load(cert_path).serial_number
    key_path.chmod(0o644)
    ensure_pki(mesh.pki_dir, NAMES)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert load(cert_path).serial_number != old_serial


# --- rotation ----------------------------------------------------------------------------------------


def test_rotate_reissues_leaves_and_keeps_ca(mesh: MeshPki) -> None:
    ca_files = (mesh.ca_cert.read_bytes(), (mesh.pki_dir / "ca.key").read_bytes())
    before = {n: (load(mesh.paths(n)[0]).serial_number, mesh.paths(n)[1].read_bytes()) for n in NAMES}
    assert rotate(mesh.pki_dir, NAMES) == NAMES
    assert (mesh.ca_cert.read_bytes(), (mesh.pki_dir / "ca.key").read_bytes()) == ca_files
    ca = load(mesh.ca_cert)
    for n in NAMES:
        cert_path, key_path = mesh.paths(n)
        leaf = load(cert_path)
        assert leaf.serial_number != before[n][0]
        assert key_path.read_bytes() != before[n][1]
        leaf.verify_directly_issued_by(ca)
    assert not list(mesh.pki_dir.glob(".*.tmp"))


def test_rotate_writes_every_file_by_atomic_replace(mesh: MeshPki, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(pki_core.os, "replace", spy)
    rotate(mesh.pki_dir, NAMES)
    expected = {p for n in NAMES for p in mesh.paths(n)}
    assert {dst for _, dst in replaced} == expected
    assert len(replaced) == len(expected)
    assert all(src.parent == dst.parent and src != dst for src, dst in replaced)


# --- errors and validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["ca.crt", "ca.key"])
def test_corrupt_ca_file_raises_pki_error_naming_it(mesh: MeshPki, filename: str) -> None:
    (mesh.pki_dir / filename).write_bytes(b"-----BEGIN GARBAGE-----\nnope\n")
    with pytest.raises(PkiError, match=filename):
        ensure_pki(mesh.pki_dir, NAMES)
    with pytest.raises(PkiError, match=filename):
        rotate(mesh.pki_dir, NAMES)


def test_missing_ca_key_raises_instead_of_replacing_ca(mesh: MeshPki) -> None:
    ca_before = mesh.ca_cert.read_bytes()
    (mesh.pki_dir / "ca.key").unlink()
    with pytest.raises(PkiError, match="ca.key"):
        ensure_pki(mesh.pki_dir, NAMES)
    assert mesh.ca_cert.read_bytes() == ca_before


def test_mismatched_ca_key_raises(mesh: MeshPki, tmp_path: Path) -> None:
    other = ensure_pki(tmp_path / "other", ["cli"])
    os.replace(other.pki_dir / "ca.key", mesh.pki_dir / "ca.key")
    with pytest.raises(PkiError, match="does not belong"):
        ensure_pki(mesh.pki_dir, NAMES)


def test_pki_error_is_exported_from_package() -> None:
    assert issubclass(pki.PkiError, Exception)


@pytest.mark.parametrize("bad", ["ca", "../etc", "Gateway", "a/b", "", "-x", "x" * 64])
def test_invalid_identity_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        ensure_pki(tmp_path, [bad])


def test_single_string_identities_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ensure_pki(tmp_path, "gateway")  # type: ignore[arg-type]


def test_too_short_validity_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ensure_pki(tmp_path, ["gateway"], validity_days=1)


# --- SPIFFE helpers, cert_info -----------------------------------------------------------------------


def test_spiffe_round_trip() -> None:
    for name in NAMES:
        assert identity_from_spiffe(spiffe_id(name)) == name


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://evil.local/svc/gateway",
        "spiffe://finopti.local/svc/",
        "spiffe://finopti.local/svc/gateway/extra",
        "spiffe://finopti.local/ns/gateway",
        "spiffe://finopti.local/svc/ca",
        "https://finopti.local/svc/gateway",
        "spiffe://finopti.local/svc/gateway?x=1",
        "",
    ],
)
def test_identity_from_spiffe_rejects(uri: str) -> None:
    assert identity_from_spiffe(uri) is None


def test_cert_info(mesh: MeshPki) -> None:
    cert_path = mesh.paths("prometheus")[0]
    leaf = load(cert_path)
    info = cert_info(cert_path)
    assert info["subject"] == "CN=prometheus"
    assert info["issuer"] == "CN=FinOptiAgents mesh CA"
    assert info["spiffe_id"] == "spiffe://finopti.local/svc/prometheus"
    assert info["not_before"] == leaf.not_valid_before_utc
    assert info["not_after"] == leaf.not_valid_after_utc
    assert int(info["serial"], 16) == leaf.serial_number
    assert cert_info(mesh.ca_cert)["spiffe_id"] is None


def test_cert_info_on_missing_file_raises_pki_error(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="nope.crt"):
        cert_info(tmp_path / "nope.crt")


# --- foreign CA --------------------------------------------------------------------------------------


def test_foreign_cert_does_not_verify_against_mesh_ca(mesh: MeshPki, tmp_path: Path) -> None:
    cert_path, key_path = make_foreign_ca_cert(tmp_path / "foreign", "gateway")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    foreign, ca = load(cert_path), load(mesh.ca_cert)
    # It looks like a mesh cert (same issuer name, same SPIFFE ID) ...
    assert foreign.issuer == ca.subject
    assert cert_info(cert_path)["spiffe_id"] == spiffe_id("gateway")
    # ... but the mesh CA did not sign it.
    with pytest.raises(InvalidSignature):
        foreign.verify_directly_issued_by(ca)


def test_foreign_cert_never_overwrites_mesh_files(mesh: MeshPki) -> None:
    before = snapshot(mesh.pki_dir)
    make_foreign_ca_cert(mesh.pki_dir, "gateway")
    after = snapshot(mesh.pki_dir)
    assert {k: v for k, v in after.items() if ".foreign." not in k} == before


# --- real mTLS handshakes ----------------------------------------------------------------------------


class MtlsServer:
    """Serves 127.0.0.1 in a thread; records per connection the peer's SPIFFE ID or the error."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.results: queue.Queue[tuple[str, str]] = queue.Queue()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # accept() wakes up regularly to notice close()
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(16)
                    uris = [v for k, v in tls.getpeercert()["subjectAltName"] if k == "URI"]
                    tls.sendall(b"hello " + uris[0].encode())
                    self.results.put(("accepted", uris[0]))
            except (ssl.SSLError, OSError) as e:
                self.results.put(("rejected", str(e)))
            finally:
                conn.close()

    def next_result(self) -> tuple[str, str]:
        return self.results.get(timeout=10)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mTLS: no client cert from the mesh CA, no connection
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server cert and hostname
    ctx.load_verify_locations(cafile=ca)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def exchange(port: int, ctx: ssl.SSLContext, server_hostname: str = "gateway") -> bytes:
    """Send a ping and return the reply. Under TLS 1.3 a client-cert rejection surfaces on the first read."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.sendall(b"ping")
            return tls.recv(64)


@pytest.fixture
def gateway(mesh: MeshPki):
    server = MtlsServer(server_context(*mesh.paths("gateway"), mesh.ca_cert))
    yield server
    server.close()


@pytest.mark.parametrize("server_hostname", ["gateway", "localhost", "127.0.0.1"])
def test_tls_accepts_mesh_client(mesh: MeshPki, gateway: MtlsServer, server_hostname: str) -> None:
    reply = exchange(gateway.port, client_context(mesh.ca_cert, *mesh.paths("orchestrator")), server_hostname)
    assert reply == b"hello spiffe://finopti.local/svc/orchestrator"
    assert gateway.next_result() == ("accepted", "spiffe://finopti.local/svc/orchestrator")


def test_tls_rejects_foreign_ca_client(mesh: MeshPki, gateway: MtlsServer, tmp_path: Path) -> None:
    foreign = make_foreign_ca_cert(tmp_path / "foreign", "orchestrator")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        exchange(gateway.port, client_context(mesh.ca_cert, *foreign))
    outcome, detail = gateway.next_result()
    assert outcome == "rejected"
    assert "certificate verify failed" in detail


def test_tls_rejects_client_without_cert(mesh: MeshPki, gateway: MtlsServer) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        exchange(gateway.port, client_context(mesh.ca_cert))
    outcome, detail = gateway.next_result()
    assert outcome == "rejected"
    assert "peer did not return a certificate" in detail


def test_tls_client_rejects_foreign_server(mesh: MeshPki, tmp_path: Path) -> None:
    # The other direction: a mesh client must not talk to an impostor gateway.
    foreign_cert, foreign_key = make_foreign_ca_cert(tmp_path / "foreign", "gateway")
    server = MtlsServer(server_context(foreign_cert, foreign_key, mesh.ca_cert))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            exchange(server.port, client_context(mesh.ca_cert, *mesh.paths("orchestrator")))
        assert server.next_result()[0] == "rejected"
    finally:
        server.close()


def test_tls_accepts_rotated_client_under_same_ca(mesh: MeshPki, gateway: MtlsServer) -> None:
    # The gateway's trust (loaded before rotation) still accepts leaves re-issued by rotate().
    rotate(mesh.pki_dir, ["orchestrator"])
    reply = exchange(gateway.port, client_context(mesh.ca_cert, *mesh.paths("orchestrator")))
    assert reply == b"hello spiffe://finopti.local/svc/orchestrator"
    assert gateway.next_result()[0] == "accepted"


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bool:
    """A real TLS handshake over a socket pair: does the server accept the client's certificate?"""
    a, b = socket.socketpair()
    result: dict = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
                result["ok"] = True
        except (ssl.SSLError, OSError):
            result["ok"] = False

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname="svc") as c:
            c.sendall(b"x")
    except (ssl.SSLError, OSError):
        pass
    thread.join(timeout=10)
    return result.get("ok", False)


def test_a_service_accepts_every_caller_file_it_is_given(tmp_path: Path) -> None:
    """Kubernetes gives a service two files to trust (FINOPTI_TLS_CALLERS=ca:own, os.pathsep-separated): the CA
    that issues only the gateway's certificate, and its own leaf for its health probe; nothing else gets in."""
    callers = ensure_pki(tmp_path / "callers", ["gateway"])
    mesh = ensure_pki(tmp_path / "mesh", ["svc", "other"])
    trusted = f"{callers.ca_cert}{os.pathsep}{mesh.paths('svc')[0]}"
    from finopti.meshtls import server_context as service_context

    server = service_context(*mesh.paths("svc"), Path(trusted))

    def client(pki: MeshPki, name: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(mesh.ca_cert))
        ctx.load_cert_chain(*pki.paths(name))
        return ctx

    assert _handshake(server, client(callers, "gateway"))
    assert _handshake(server, client(mesh, "svc"))
    assert not _handshake(server, client(mesh, "other"))  # same CA as the service, not a caller
