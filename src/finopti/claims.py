"""The verified groups of a user as the gateway forwards them in `x-user-groups`.

The development identity provider puts groups in one comma-separated string; an OpenID Connect provider
(Keycloak, Entra ID...) sends a JSON array, which Envoy's `claim_to_headers` forwards base64-encoded JSON
(and the APISIX rendering joins with commas). Both read the same here.
"""

import base64
import binascii
import json


def groups_from_header(value: str | None) -> list[str]:
    if not value:
        return []
    value = value.strip()
    if "," not in value and not value.startswith("["):
        try:
            decoded = json.loads(base64.b64decode(value + "=" * (-len(value) % 4), validate=True))
        except (binascii.Error, ValueError):
            decoded = None
        if isinstance(decoded, list):
            return [g.strip() for g in decoded if isinstance(g, str) and g.strip()]
    return [g.strip() for g in value.split(",") if g.strip()]
