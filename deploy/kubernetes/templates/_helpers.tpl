{{/* Rendered from mesh.yaml by `finopti render kubernetes`; do not edit. */}}

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
{{- $text = replace "{[\"finopti-edge-hosts.invalid\"] = true}" (printf "{%s}" (join ", " $hosts)) $text -}}
{{- $text = replace "finopti-edge-hosts.invalid" (join ", " .Values.gateway.hosts) $text -}}
{{- replace "https://finopti-issuer.invalid" .Values.identity.issuer $text -}}
{{- end }}
