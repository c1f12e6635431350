{{/* Names and labels shared by every object of the chart. */}}
{{- define "oxbridge.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oxbridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "oxbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oxbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "oxbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "oxbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* oxbridge.toml: the parts the chart owns, then the operator's `config`. */}}
{{- define "oxbridge.config" -}}
# Rendered by the oxbridge Helm chart; edit values.yaml, not this.
# A subdirectory of the volume, which oxbridge creates 0700 itself: the kubelet makes the
# volume's root group-writable for fsGroup, and oxbridge refuses a data_dir others can write.
data_dir = "/var/lib/oxbridge/data"
{{- if .Values.proxyProtocol.enabled }}
trusted_proxies = {{ .Values.proxyProtocol.trustedProxies | toJson }}
{{- end }}

[admin]
listen = "0.0.0.0:{{ .Values.admin.port }}"
{{- range .Values.listeners }}

[[listener]]
protocol = {{ .protocol | quote }}
listen = "0.0.0.0:{{ .containerPort }}"
tls = {{ .tls | quote }}
{{- if $.Values.proxyProtocol.enabled }}
proxy_protocol = true
{{- end }}
{{- end }}
{{- if .Values.tls.secretName }}

[tls]
cert = "/run/secrets/tls/tls.crt"
key = "/run/secrets/tls/tls.key"
{{- end }}
{{- if or .Values.masterKey.existingSecret .Values.store.url }}

[store]
{{- if .Values.store.url }}
url = {{ .Values.store.url | quote }}
{{- end }}
{{- if .Values.masterKey.existingSecret }}
master_key_env = "OXBRIDGE_MASTER_KEY"
{{- end }}
{{- end }}

{{ .Values.config }}
{{- end -}}
