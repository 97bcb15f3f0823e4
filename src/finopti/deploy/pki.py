"""`python -m finopti.deploy.pki DIR GATEWAY NAME...`: the compose bundle's one-shot `pki` service.

Keeps the mesh CA and every leaf under DIR/.ca (mounted by no other container) and gives each identity a
directory of its own, DIR/<name>/, which compose mounts (volume subpath) into that container only:
`tls.crt`, `tls.key`, `ca.crt`, and for services `callers.pem` (the certificates it accepts).
Idempotent: an `up` reuses what is valid and re-issues leaves close to expiry.
"""

import os
import sys
from pathlib import Path

from finopti.pki import ensure_pki

DEFAULT_DAYS = 30


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def distribute(pki_dir: Path, gateway: str, services: list[str], days: int = DEFAULT_DAYS) -> None:
    pki = ensure_pki(pki_dir / ".ca", [gateway, *services], validity_days=days)
    ca = pki.ca_cert.read_bytes()
    gateway_cert = pki.paths(gateway)[0].read_bytes()
    for name in (gateway, *services):
        cert_path, key_path = pki.paths(name)
        cert = cert_path.read_bytes()
        out = pki_dir / name
        out.mkdir(mode=0o755, exist_ok=True)
        _write(out / "ca.crt", ca, 0o644)
        _write(out / "tls.crt", cert, 0o644)
        # APISIX runs as its own user: its key must be readable by it. Only APISIX mounts this directory.
        _write(out / "tls.key", key_path.read_bytes(), 0o644 if name == gateway else 0o600)
        if name != gateway:
            # A service accepts the gateway and itself (for its container healthcheck), no one else.
            _write(out / "callers.pem", gateway_cert + cert, 0o644)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m finopti.deploy.pki DIR GATEWAY [SERVICE...]", file=sys.stderr)
        return 2
    days = int(os.environ.get("FINOPTI_CERT_DAYS", DEFAULT_DAYS))
    distribute(Path(argv[0]), argv[1], argv[2:], days)
    print(f"mesh certificates ready in {argv[0]} for {', '.join(argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
