{{/* Name of the release's objects: the release name when it already names the chart (`helm
     install sharewall-injector …` gives sharewall-injector), else <release>-sharewall-injector; at
     most 63 characters. */}}
{{- define "sharewall-injector.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sharewall-injector.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sharewall-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The image reference; the tag defaults to the chart's appVersion. */}}
{{- define "sharewall-injector.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The webhook's CA bundle: the value, else the TLS Secret's ca.crt (looked up at install). */}}
{{- define "sharewall-injector.caBundle" -}}
{{- if .Values.webhook.tls.caBundle -}}
{{- .Values.webhook.tls.caBundle -}}
{{- else -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace .Values.webhook.tls.secretName -}}
{{- if $secret -}}{{- index $secret.data "ca.crt" | default "" -}}{{- end -}}
{{- end -}}
{{- end -}}
