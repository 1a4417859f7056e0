{{/* Name of the release's objects: the release name when it already names the chart (`helm
     install sharewall-registry …` gives sharewall-registry), else <release>-sharewall-registry; at
     most 63 characters. */}}
{{- define "sharewall-registry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sharewall-registry.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sharewall-registry.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* True (non-empty) when the registry runs on the embedded SQLite file. */}}
{{- define "sharewall-registry.sqlite" -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* The database URL (read by `sharewall registry` from $SHAREWALL_REGISTRY_DB, so it is never on
     argv): from a Secret, a literal URL, or the SQLite file on the PVC. */}}
{{- define "sharewall-registry.dbEnv" -}}
- name: SHAREWALL_REGISTRY_DB
{{- if .Values.database.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
{{- else if .Values.database.url }}
  value: {{ .Values.database.url | quote }}
{{- else }}
  value: "sqlite+aiosqlite:////data/registry.sqlite"
{{- end }}
{{- end -}}

{{- define "sharewall-registry.tokenSecretName" -}}
{{- .Values.tokens.existingSecret | default (printf "%s-tokens" (include "sharewall-registry.fullname" .)) -}}
{{- end -}}
