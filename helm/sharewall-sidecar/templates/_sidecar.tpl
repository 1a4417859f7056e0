{{/*
Named templates that inject sharewall into a pod. Each takes a context with `.Values` holding
this chart's values (`registry`, `sidecar`) and `.release` naming the release that rendered this
chart's ConfigMaps, e.g. from another chart that depends on this one:
  {{- $sw := dict "Values" (index .Values "sharewall-sidecar") "release" .Release.Name }}
  initContainers: {{- include "sharewall-sidecar.initContainers" $sw | nindent 8 }}
*/}}

{{/* Label that marks a pod as carrying an egress proxy (the registry admits these pods). */}}
{{- define "sharewall-sidecar.podLabels" -}}
sharewall.io/egress-proxy: "true"
{{- end -}}

{{/* The proxy container (without restartPolicy; see initContainers / containers below).
     `.listenHost` (default 127.0.0.1) is set to 0.0.0.0 only by the gateway, `.workers` (default
     sidecar.proxy.workers) by the gateway too. */}}
{{- define "sharewall-sidecar.proxyContainer" -}}
{{- $p := .Values.sidecar.proxy -}}
- name: sharewall-proxy
  image: "{{ $p.image.repository }}:{{ $p.image.tag }}"
  imagePullPolicy: {{ $p.image.pullPolicy }}
  args:
    - proxy
    {{- if .Values.registry.file }}
    - --registry-file=/etc/sharewall/registry/registry.yaml
    {{- else }}
    # The token is read from the mounted Secret ($SHAREWALL_TOKEN_FILE), never from argv;
    # kubelet updates the file in place and the proxy takes a rotated secret without a restart.
    - --registry-url={{ .Values.registry.url }}
    {{- end }}
    - --listen={{ .listenHost | default "127.0.0.1" }}:{{ $p.port }}
    - --admin-listen=0.0.0.0:{{ $p.adminPort }}
    - --mode={{ $p.mode }}
    {{- with $p.defaultPurpose }}
    - --default-purpose={{ . }}
    {{- end }}
    {{- if .Values.sidecar.opa.enabled }}
    - --engine=opa
    - --opa-url=http://127.0.0.1:{{ .Values.sidecar.opa.port }}
    {{- end }}
    {{- if .Values.sidecar.tls.caSecret }}
    - --ca-cert=/etc/sharewall/ca/tls.crt
    - --ca-key=/etc/sharewall/ca/tls.key
    {{- end }}
    {{- range $p.resolve }}
    - --resolve={{ . }}
    {{- end }}
    {{- $workers := .workers | default $p.workers }}
    {{- if and $workers (ne (toString $workers) "1") }}
    # Worker processes sharing the ports (SO_REUSEPORT); the admin port aggregates them.
    - --workers={{ $workers }}
    {{- end }}
    {{- if and (eq .Values.sidecar.capture "transparent") (not .listenHost) }}
    # REDIRECT in the nat OUTPUT chain maps locally generated packets to 127.0.0.1: loopback
    # suffices (Istio binds 0.0.0.0 because it also captures inbound traffic; on the pod IP any
    # pod could reach this listener directly). With IPv6 rules ip6tables REDIRECTs to ::1, so
    # one dual-stack listener on [::] takes both (the proxy refuses connections made to it).
    {{- if .Values.sidecar.transparent.ipv6 }}
    - --transparent-listen=[::]:{{ .Values.sidecar.transparent.port }}
    {{- else }}
    - --transparent-listen=127.0.0.1:{{ .Values.sidecar.transparent.port }}
    {{- end }}
    {{- end }}
    {{- if and .listenHost .Values.gateway.clientTLS.secret }}
    # The gateway speaks TLS and requires a client certificate signed by this CA: each call's
    # source is its client's workload (SPIFFE ID or CN), not the gateway's own.
    - --client-ca=/etc/sharewall/gateway-tls/{{ .Values.gateway.clientTLS.caKey }}
    - --tls-cert=/etc/sharewall/gateway-tls/tls.crt
    - --tls-key=/etc/sharewall/gateway-tls/tls.key
    {{- end }}
  env:
    {{- if not .Values.registry.file }}
    - name: SHAREWALL_TOKEN_FILE
      value: /var/run/secrets/sharewall/token
    {{- end }}
    - name: SHAREWALL_SOURCE
      {{- if .Values.sidecar.source.workload }}
      value: {{ .Values.sidecar.source.workload | quote }}
      {{- else }}
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['app.kubernetes.io/name']
      {{- end }}
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: SHAREWALL_SPOOL_DIR
      value: /var/spool/sharewall
    # `python -OO`: no docstrings nor asserts loaded, ~1 MB of every pod's sidecar (the image
    # holds the bytecode of both levels; README.md, "Container image").
    - name: PYTHONOPTIMIZE
      value: "2"
  ports:
    {{- if .listenHost }}
    - name: proxy
      containerPort: {{ $p.port }}
      protocol: TCP
    {{- end }}
    - name: sw-admin
      containerPort: {{ $p.adminPort }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /readyz
      port: sw-admin
    periodSeconds: 1
    failureThreshold: 60
  livenessProbe:
    httpGet:
      path: /healthz
      port: sw-admin
    periodSeconds: 10
  readinessProbe:
    # Not ready until a snapshot is loaded and the engine answers: the proxy fails closed
    # meanwhile, and the pod is kept out of Services.
    httpGet:
      path: /readyz
      port: sw-admin
    periodSeconds: 5
  resources:
    {{- toYaml $p.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
  volumeMounts:
    - name: sharewall-spool
      mountPath: /var/spool/sharewall
    - name: sharewall-tmp
      mountPath: /tmp
    {{- if .Values.registry.file }}
    - name: sharewall-registry-file
      mountPath: /etc/sharewall/registry
      readOnly: true
    {{- else }}
    # The whole volume, not a subPath: kubelet does not update subPath mounts.
    - name: sharewall-token
      mountPath: /var/run/secrets/sharewall
      readOnly: true
    {{- end }}
    {{- if .Values.sidecar.tls.caSecret }}
    - name: sharewall-ca
      mountPath: /etc/sharewall/ca
      readOnly: true
    {{- end }}
    {{- if and .listenHost .Values.gateway.clientTLS.secret }}
    - name: sharewall-gateway-tls
      mountPath: /etc/sharewall/gateway-tls
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The OPA container: bundle from the registry, API on loopback, /health on the pod IP. */}}
{{- define "sharewall-sidecar.opaContainer" -}}
{{- $o := .Values.sidecar.opa -}}
- name: sharewall-opa
  image: "{{ $o.image.repository }}:{{ $o.image.tag }}"
  imagePullPolicy: {{ $o.image.pullPolicy }}
  args:
    - run
    - --server
    - --addr=127.0.0.1:{{ $o.port }}
    - --diagnostic-addr=0.0.0.0:{{ $o.diagnosticPort }}
    - --config-file=/etc/opa/config.yaml
  ports:
    - name: opa-diag
      containerPort: {{ $o.diagnosticPort }}
      protocol: TCP
  readinessProbe:
    # ?bundles: ready only once the sharewall bundle is activated.
    httpGet:
      path: /health?bundles
      port: opa-diag
    periodSeconds: 5
  livenessProbe:
    httpGet:
      path: /health
      port: opa-diag
    periodSeconds: 10
  resources:
    {{- toYaml $o.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
  volumeMounts:
    - name: sharewall-opa-config
      mountPath: /etc/opa
      readOnly: true
    {{- if not .Values.registry.file }}
    # The token's Secret as the proxy mounts it: the whole volume, which kubelet keeps current.
    - name: sharewall-token
      mountPath: /var/run/secrets/sharewall
      readOnly: true
    {{- end }}
{{- end -}}

{{/* Transparent capture: installs the pod's iptables rules, then exits. Root with NET_ADMIN and
     NET_RAW in the pod's own network namespace only, as Istio's init container; the proxy, UID
     1337, is the one UID the rules let out. */}}
{{- define "sharewall-sidecar.captureContainer" -}}
{{- $t := .Values.sidecar.transparent -}}
- name: sharewall-capture
  image: "{{ .Values.sidecar.proxy.image.repository }}:{{ .Values.sidecar.proxy.image.tag }}"
  imagePullPolicy: {{ .Values.sidecar.proxy.image.pullPolicy }}
  args:
    - capture-rules
    - --apply
    - --proxy-uid
    - {{ .Values.sidecar.securityContext.runAsUser | quote }}
    - --port
    - {{ $t.port | quote }}
    {{- range $t.excludeCIDRs }}
    - --exclude-cidr
    - {{ . | quote }}
    {{- end }}
    {{- range $t.excludePorts }}
    - --exclude-port
    - {{ . | quote }}
    {{- end }}
    {{- if $t.ipv6 }}
    - --ipv6
    {{- end }}
  env:
    # iptables-legacy takes a lock file; the root filesystem is read-only.
    - name: XTABLES_LOCKFILE
      value: /tmp/xtables.lock
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
    limits:
      memory: 128Mi
  securityContext:
    runAsNonRoot: false
    runAsUser: 0
    runAsGroup: 0
    privileged: false
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      add: [NET_ADMIN, NET_RAW]
      drop: [ALL]
  volumeMounts:
    - name: sharewall-tmp
      mountPath: /tmp
{{- end -}}

{{/* Put this under the pod's initContainers: the capture init container (transparent capture),
     then the native sidecars (k8s >= 1.29), in that order and before the app's own init
     containers. Empty with proxy-env capture and classic sidecars. */}}
{{- define "sharewall-sidecar.initContainers" -}}
{{- if eq .Values.sidecar.capture "transparent" }}
{{ include "sharewall-sidecar.captureContainer" . }}
{{- end }}
{{- if .Values.sidecar.native }}
{{- if .Values.sidecar.opa.enabled }}
{{ include "sharewall-sidecar.opaContainer" . }}
  restartPolicy: Always
{{- end }}
{{ include "sharewall-sidecar.proxyContainer" . }}
  restartPolicy: Always
{{- end }}
{{- end -}}

{{/* Classic sidecars: put this under the pod's containers. Empty when native is true. */}}
{{- define "sharewall-sidecar.containers" -}}
{{- if not .Values.sidecar.native }}
{{ include "sharewall-sidecar.proxyContainer" . }}
{{- if .Values.sidecar.opa.enabled }}
{{ include "sharewall-sidecar.opaContainer" . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Env for the app container: with proxy-env capture the proxy variables in both cases (curl
     reads only lower case); with interception the trust bundle. Possibly empty. */}}
{{- define "sharewall-sidecar.appEnv" -}}
{{- $proxy := printf "http://127.0.0.1:%v" .Values.sidecar.proxy.port -}}
{{- $noProxy := join "," .Values.sidecar.noProxy -}}
{{- if eq .Values.sidecar.capture "proxy-env" }}
- name: HTTP_PROXY
  value: {{ $proxy | quote }}
- name: HTTPS_PROXY
  value: {{ $proxy | quote }}
- name: http_proxy
  value: {{ $proxy | quote }}
- name: https_proxy
  value: {{ $proxy | quote }}
- name: NO_PROXY
  value: {{ $noProxy | quote }}
- name: no_proxy
  value: {{ $noProxy | quote }}
{{- end }}
{{- if .Values.sidecar.tls.appTrustBundle.configMap }}
{{- $bundle := printf "/etc/sharewall/trust/%s" .Values.sidecar.tls.appTrustBundle.key }}
- name: SSL_CERT_FILE
  value: {{ $bundle | quote }}
- name: REQUESTS_CA_BUNDLE
  value: {{ $bundle | quote }}
- name: CURL_CA_BUNDLE
  value: {{ $bundle | quote }}
- name: NODE_EXTRA_CA_CERTS
  value: {{ $bundle | quote }}
{{- end }}
{{- end -}}

{{/* The app container's volumeMounts (the trust bundle), possibly empty. */}}
{{- define "sharewall-sidecar.appVolumeMounts" -}}
{{- if .Values.sidecar.tls.appTrustBundle.configMap }}
- name: sharewall-trust
  mountPath: /etc/sharewall/trust
  readOnly: true
{{- end }}
{{- end -}}

{{/* The pod volumes every sharewall container needs; `release` names the chart's ConfigMaps. */}}
{{- define "sharewall-sidecar.volumes" -}}
- name: sharewall-spool
  emptyDir:
    sizeLimit: {{ .Values.sidecar.proxy.spoolSizeLimit }}
- name: sharewall-tmp
  emptyDir: {}
{{- if .Values.registry.file }}
- name: sharewall-registry-file
  configMap:
    name: {{ .release }}-sharewall-registry-file
{{- else }}
# The proxy's registry token as a file, kept current by kubelet when the Secret changes.
- name: sharewall-token
  secret:
    secretName: {{ .Values.registry.tokenSecret.name }}
    items:
      - key: {{ .Values.registry.tokenSecret.key }}
        path: token
    # Read by the proxy, UID 1337, as the CA volume below (and by OPA, when it runs).
    defaultMode: 0444
{{- end }}
{{- if .Values.sidecar.tls.caSecret }}
- name: sharewall-ca
  secret:
    secretName: {{ .Values.sidecar.tls.caSecret }}
    # The files belong to root and the proxy runs as 1337: 0400 would be unreadable to it. Only
    # the proxy container mounts this volume.
    defaultMode: 0444
{{- end }}
{{- if .Values.sidecar.opa.enabled }}
- name: sharewall-opa-config
  configMap:
    name: {{ .release }}-sharewall-opa
{{- end }}
{{- if .Values.sidecar.tls.appTrustBundle.configMap }}
- name: sharewall-trust
  configMap:
    name: {{ .Values.sidecar.tls.appTrustBundle.configMap }}
{{- end }}
{{- if and .listenHost .Values.gateway.clientTLS.secret }}
- name: sharewall-gateway-tls
  secret:
    secretName: {{ .Values.gateway.clientTLS.secret }}
    # Read by the proxy, UID 1337, as the CA volume above.
    defaultMode: 0444
{{- end }}
{{- end -}}
