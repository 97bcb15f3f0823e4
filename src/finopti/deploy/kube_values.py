"""The chart's own files: Chart.yaml, values.yaml (every value a user changes, in one place, with its
defaults from mesh.yaml), values.schema.json (Helm refuses values that do not fit it), the named templates
and NOTES.txt."""

from finopti.deploy.apisix import dump_yaml
from finopti.deploy.topology import ENGINES
from finopti.mesh.model import HOST_PATTERN, MeshSpec

CHART_VERSION = "0.1.0"
APP_VERSION = "0.1.0"  # the platform image's tag (compose builds finopti/platform:0.1.0)
KUBE_VERSION = ">=1.29.0-0"
# What the chart's values may hold for an issuer: an URL that is also safe inside the gateway's YAML.
ISSUER_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$"


def chart_yaml() -> str:
    return dump_yaml({
        "apiVersion": "v2",
        "name": "finopti",
        "description": "FinOptiAgents: a FinOps assistant as AI-agent microservices behind Apache APISIX and OPA, "
                       "with NetworkPolicies and cert-manager identities; rendered from mesh.yaml",
        "type": "application",
        "version": CHART_VERSION,
        "appVersion": APP_VERSION,
        "kubeVersion": KUBE_VERSION,
        "icon": "https://raw.githubusercontent.com/cncf/artwork/main/projects/kubernetes/icon/color/kubernetes-icon-color.svg",
    })


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def _autoscaling(minimum: int, maximum: int) -> dict:
    return {"enabled": True, "minReplicas": minimum, "maxReplicas": maximum, "targetCPU": 70}


def default_values(spec: MeshSpec) -> dict:
    services = {}
    for s in spec.services:
        if s.name in ENGINES:
            continue
        entry: dict = {"resources": _resources("100m", "256Mi", "1", "512Mi")}
        if s.state == "persistent":
            entry["storage"] = "1Gi"
        else:
            entry.update({"replicas": 2, "autoscaling": _autoscaling(2, 6)})
        services[s.name] = entry
    values = {
        "image": {"repository": "finopti/platform", "tag": "", "pullPolicy": "IfNotPresent"},
        "imagePullSecrets": [],
        "gateway": {
            "hosts": list(spec.gateway.edge.hosts),
            "replicas": 2,
            "autoscaling": _autoscaling(2, 10),
            "resources": _resources("200m", "256Mi", "2", "512Mi"),
            "service": {"type": "ClusterIP"},
        },
        "ingress": {"enabled": False, "className": "", "annotations": {}, "tls": []},
        "identity": {"issuer": spec.identity.issuer},
        "storageClass": "",
        "services": services,
        "policy": {"replicas": 2, "autoscaling": _autoscaling(2, 6),
                   "resources": _resources("100m", "128Mi", "1", "256Mi")},
        "rateLimitStore": {"resources": _resources("50m", "64Mi", "500m", "128Mi")},
        "certificates": {"duration": "2160h", "renewBefore": "720h", "caDuration": "87600h"},
        "networkPolicy": {
            "apiServer": {"cidr": "0.0.0.0/0", "ports": [{"protocol": "TCP", "port": 443},
                                                        {"protocol": "TCP", "port": 6443}]},
            "identityProvider": {"cidr": "0.0.0.0/0"},
        },
        "loki": {"storage": "10Gi", "resources": _resources("100m", "256Mi", "1", "1Gi")},
        "prometheus": {"storage": "10Gi", "retention": "15d", "resources": _resources("200m", "512Mi", "1", "2Gi")},
        "grafana": {"adminPassword": "", "existingSecret": "",
                    "resources": _resources("50m", "128Mi", "500m", "256Mi")},
        "alloy": {"resources": _resources("50m", "128Mi", "500m", "256Mi")},
    }
    if spec.identity.provider == "dev":
        values["identity"].update({"publicKey": "", "existingSecret": ""})
    return values


COMMENTS = {
    "image": "The platform image (the repository's Dockerfile; compose builds it as finopti/platform). The tag "
             "defaults to the chart's appVersion.",
    "gateway": "APISIX. `hosts`: the only Host names the edge serves (others get 421), also the Ingress rules' "
               "hosts (IP addresses are left out of those). Rate limits hold across replicas (one counter store).",
    "ingress": "An Ingress to the gateway's edge listener, for the host names above.",
    "identity": "Who signs users' tokens. `publicKey`: the development provider's PEM public key (or "
                "`existingSecret` with a `public-key.pem` key); with identity.provider: oidc in mesh.yaml, the "
                "keys come from the issuer's discovery document.",
    "storageClass": "The storage class of every volume (empty: the cluster's default).",
    "services": "Each service of mesh.yaml. Services with `state: persistent` in mesh.yaml run one replica "
                "with a volume of `storage`; the others scale between the autoscaling bounds.",
    "policy": "OPA (the same Rego and role data as everywhere).",
    "rateLimitStore": "The counter store APISIX's rate limits share (rendered when a route has a rate limit).",
    "certificates": "cert-manager: how long identities last and when they are renewed.",
    "networkPolicy": "Where the Kubernetes API is (Prometheus and Alloy discover pods), and the identity "
                     "provider (oidc). Narrow both to your cluster's addresses.",
    "grafana": "`adminPassword` (or `existingSecret` with an `admin-password` key) is required.",
}


def values_yaml(spec: MeshSpec) -> str:
    parts = ["# FinOptiAgents chart values. Rendered from mesh.yaml by `finopti render kubernetes`; to keep your\n"
             "# changes, put them in your own file: helm install finopti deploy/kubernetes -f my-values.yaml\n"]
    for key, value in default_values(spec).items():
        comment = COMMENTS.get(key)
        text = dump_yaml({key: value})
        parts.append("\n" + (f"# {comment}\n" if comment else "") + text)
    return _wrap_comments("".join(parts))


def _wrap_comments(text: str, width: int = 110) -> str:
    out = []
    for line in text.splitlines():
        if not line.startswith("# ") or len(line) <= width:
            out.append(line)
            continue
        words, current = line[2:].split(), "#"
        for word in words:
            if len(current) + 1 + len(word) > width:
                out.append(current)
                current = "#"
            current += " " + word
        out.append(current)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- values.schema.json

def _object(properties: dict, required: list[str] | None = None, extra: bool = False) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = required
    return schema


_QUANTITY = {"type": ["string", "integer"]}
_RESOURCES = {"type": "object", "properties": {
    "requests": {"type": "object", "additionalProperties": _QUANTITY},
    "limits": {"type": "object", "additionalProperties": _QUANTITY}}, "additionalProperties": False}
_AUTOSCALING = _object({"enabled": {"type": "boolean"}, "minReplicas": {"type": "integer", "minimum": 1},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "targetCPU": {"type": "integer", "minimum": 1, "maximum": 100}},
                       ["enabled", "minReplicas", "maxReplicas", "targetCPU"])
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"}


def values_schema(spec: MeshSpec) -> dict:
    services = {}
    for s in spec.services:
        if s.name in ENGINES:
            continue
        if s.state == "persistent":
            services[s.name] = _object({"resources": _RESOURCES, "storage": _QUANTITY}, ["resources", "storage"])
        else:
            services[s.name] = _object({"resources": _RESOURCES, "replicas": {"type": "integer", "minimum": 1},
                                        "autoscaling": _AUTOSCALING}, ["resources", "replicas", "autoscaling"])
    identity = {"issuer": {"type": "string", "pattern": ISSUER_PATTERN}}
    if spec.identity.provider == "dev":
        identity.update({"publicKey": {"type": "string"}, "existingSecret": {"type": "string"}})
    cidr = {"type": "string", "pattern": r"^[0-9a-fA-F.:]+/[0-9]{1,3}$"}
    return {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": "FinOptiAgents chart values",
        **_object({
            "image": _object({"repository": {"type": "string", "minLength": 1}, "tag": {"type": "string"},
                              "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}),
            "imagePullSecrets": {"type": "array", "items": _object({"name": {"type": "string"}}, ["name"])},
            "gateway": _object({
                "hosts": {"type": "array", "minItems": 1, "uniqueItems": True,
                          "items": {"type": "string", "pattern": HOST_PATTERN}},
                "replicas": {"type": "integer", "minimum": 1},
                "autoscaling": _AUTOSCALING,
                "resources": _RESOURCES,
                "service": _object({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}}),
            }),
            "ingress": _object({"enabled": {"type": "boolean"}, "className": {"type": "string"},
                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                "tls": {"type": "array"}}),
            "identity": _object(identity, ["issuer"]),
            "storageClass": {"type": "string"},
            "services": _object(services, list(services)),
            "policy": _object({"replicas": {"type": "integer", "minimum": 1}, "autoscaling": _AUTOSCALING,
                               "resources": _RESOURCES}),
            "rateLimitStore": _object({"resources": _RESOURCES}),
            "certificates": _object({"duration": _DURATION, "renewBefore": _DURATION, "caDuration": _DURATION}),
            "networkPolicy": _object({
                "apiServer": _object({"cidr": cidr, "ports": {"type": "array"}}),
                "identityProvider": _object({"cidr": cidr}),
            }),
            "loki": _object({"storage": _QUANTITY, "resources": _RESOURCES}),
            "prometheus": _object({"storage": _QUANTITY, "retention": {"type": "string"}, "resources": _RESOURCES}),
            "grafana": _object({"adminPassword": {"type": "string"}, "existingSecret": {"type": "string"},
                                "resources": _RESOURCES}),
            "alloy": _object({"resources": _RESOURCES}),
        }),
    }


# ---------------------------------------------------------------- named templates

HELPERS = r'''{{/* Rendered from mesh.yaml by `finopti render kubernetes`; do not edit. */}}

{{/* An optional storageClassName line: the values' storage class, or the cluster's default. */}}
{{- define "finopti.storageClass" -}}
{{- with .Values.storageClass }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The Secret holding the identity provider's public key (development provider). */}}
{{- define "finopti.identitySecret" -}}
{{ .Values.identity.existingSecret | default "finopti-identity" }}
{{- end }}

{{/* The Secret holding Grafana's admin password. */}}
{{- define "finopti.grafanaSecret" -}}
{{ .Values.grafana.existingSecret | default "finopti-grafana" }}
{{- end }}

{{/* Ingress rules: one per host name of gateway.hosts (IP addresses cannot be Ingress hosts). */}}
{{- define "finopti.ingressRules" -}}
{{- range .Values.gateway.hosts }}
{{- if and (regexMatch "^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$" .) (not (regexMatch "^[0-9.]+$" .)) }}
- host: {{ . | quote }}
  http:
    paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: apisix
            port:
              name: edge
{{- end }}
{{- end }}
{{- end }}

{{/* APISIX's route file with the values' host names and issuer in place of the render's placeholders
     (both are checked against values.schema.json first). */}}
{{- define "finopti.apisixYaml" -}}
{{- $text := .Files.Get "files/apisix/apisix.yaml" -}}
{{- $hosts := list -}}
{{- range .Values.gateway.hosts }}{{ $hosts = append $hosts (printf "[%s] = true" (. | quote)) }}{{ end -}}
{{- $text = replace "{[\"@HOSTS@\"] = true}" (printf "{%s}" (join ", " $hosts)) $text -}}
{{- $text = replace "@HOSTS@" (join ", " .Values.gateway.hosts) $text -}}
{{- replace "@ISSUER@" .Values.identity.issuer $text -}}
{{- end }}
'''


def helpers(hosts_placeholder: str, issuer_placeholder: str) -> str:
    return HELPERS.replace("@HOSTS@", hosts_placeholder).replace("@ISSUER@", issuer_placeholder)


def notes() -> str:
    return """FinOptiAgents is installed in {{ .Release.Namespace }}.

Reach the edge (host names served: {{ join ", " .Values.gateway.hosts }}):
  kubectl -n {{ .Release.Namespace }} port-forward svc/apisix 8080:edge
  open http://localhost:8080/

Grafana:
  kubectl -n {{ .Release.Namespace }} port-forward svc/grafana 3000:http

Check what the cluster enforces, from the rendered manifests (no cluster access needed):
  helm template {{ .Release.Name }} <chart> -n {{ .Release.Namespace }} -f <your values> | finopti verify-kubernetes -
"""
