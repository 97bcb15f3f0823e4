"""Validate rendered manifests against the Kubernetes OpenAPI schemas, strictly (an unknown field is an error).

- Built-in kinds: PyPI's `kubernetes-validate` (the JSON schemas of each Kubernetes release, `-strict` variant:
  `additionalProperties: false` everywhere), for the oldest release the chart supports and the newest it ships.
- cert-manager's Certificate and Issuer: their CRDs' `openAPIV3Schema` (v1), vendored in
  `schemas/cert-manager/` with cert-manager's licence, made strict the same way: an object that lists its
  properties admits no others, unless the schema says `x-kubernetes-preserve-unknown-fields`.
"""

import copy
import json
from functools import cache
from pathlib import Path

from jsonschema import Draft7Validator

from finopti.errors import FinoptiError

# The chart's kubeVersion floor (Chart.yaml) and the release the schemas are current for.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
CRD_SCHEMAS = Path(__file__).parent / "schemas" / "cert-manager"
CRDS = {("cert-manager.io/v1", "Certificate"): "certificates.json", ("cert-manager.io/v1", "Issuer"): "issuers.json"}


class ValidatorUnavailable(FinoptiError):
    exit_code = 2


def _strict(schema):
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    open_ended = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not open_ended:
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(api_version: str, kind: str) -> Draft7Validator:
    doc = json.loads((CRD_SCHEMAS / CRDS[(api_version, kind)]).read_text())
    schema = _strict(copy.deepcopy(doc["openAPIV3Schema"]))
    return Draft7Validator(schema)


def _where(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def validate_manifest(doc: dict, versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """Problems of one manifest (empty: valid for every one of `versions`)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRDS:
        return [f"{_where(doc)}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in crd_validator(*key).iter_errors(doc)]
    try:
        import kubernetes_validate
    except ImportError:
        raise ValidatorUnavailable("schema validation needs kubernetes-validate (pip install "
                                   "'finopti[kubernetes]')") from None
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(map(str, exc.absolute_path)) or "(top)"
            problems.append(f"{_where(doc)}: Kubernetes {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{_where(doc)}: Kubernetes {version} has no {key[0]} {key[1]}")
    return problems


def validate_manifests(docs: list[dict], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    return [p for doc in docs for p in validate_manifest(doc, versions)]
