"""`python -m finopti.deploy.healthcheck`: the container healthcheck of a service.

GETs the service's health path on its own port. With mTLS on (FINOPTI_TLS_CERT/KEY), it presents the
service's own certificate, which the service pins beside the gateway's (see finopti.deploy.pki).
"""

import os
import ssl
import sys
import urllib.request
from pathlib import Path


def main() -> int:
    port = os.environ.get("FINOPTI_PORT")
    if not port:
        print("FINOPTI_PORT is not set", file=sys.stderr)
        return 1
    path = os.environ.get("FINOPTI_HEALTH", "/healthz")
    cert, key = os.environ.get("FINOPTI_TLS_CERT"), os.environ.get("FINOPTI_TLS_KEY")
    context = None
    scheme = "http"
    if cert and key:
        scheme = "https"
        context = ssl.create_default_context(cafile=str(Path(cert).with_name("ca.crt")))
        context.load_cert_chain(cert, key)
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", context=context, timeout=3) as r:
            return 0 if r.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
