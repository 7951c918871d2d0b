{{/* Names. */}}
{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "shoal.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "shoal.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shoal.labels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "tracker"). */}}
{{- define "shoal.selector" -}}
app.kubernetes.io/name: {{ include "shoal.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shoal.componentLabels" -}}
{{ include "shoal.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shoal.image" -}}
{{ printf "%s:%s" .Values.image.repository (toString .Values.image.tag) }}
{{- end -}}

{{/* URLs between components: https when TLS is on. */}}
{{- define "shoal.scheme" -}}{{ if .Values.tls.enabled }}https{{ else }}http{{ end }}{{- end -}}
{{- define "shoal.svcDomain" -}}{{ printf "%s.svc.%s" .Release.Namespace .Values.clusterDomain }}{{- end -}}

{{- define "shoal.originURLs" -}}
{{- $urls := list -}}
{{- $fn := include "shoal.fullname" . -}}
{{- range $i := until (int .Values.origin.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-origin-%d.%s-origin.%s:%d" (include "shoal.scheme" $) $fn $i $fn (include "shoal.svcDomain" $) (int $.Values.origin.port)) -}}
{{- end -}}
{{ toJson $urls }}
{{- end -}}

{{- define "shoal.trackerURL" -}}
{{ printf "%s://%s-tracker.%s:%d" (include "shoal.scheme" .) (include "shoal.fullname" .) (include "shoal.svcDomain" .) (int .Values.tracker.port) }}
{{- end -}}

{{- define "shoal.buildindexURL" -}}
{{ printf "%s://%s-buildindex.%s:%d" (include "shoal.scheme" .) (include "shoal.fullname" .) (include "shoal.svcDomain" .) (int .Values.buildindex.port) }}
{{- end -}}

{{/* The [tls] table of every role. */}}
{{- define "shoal.tlsTOML" -}}
{{- if .Values.tls.enabled }}

[tls]
cert = "/etc/shoal/tls/tls.crt"
key = "/etc/shoal/tls/tls.key"
ca = "/etc/shoal/tls/ca.crt"
mtls = {{ .Values.tls.mtls }}
reload_interval = {{ .Values.tls.reloadInterval | quote }}
{{- end }}
{{- end -}}

{{- define "shoal.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}
{{ include "shoal.fullname" . }}-tls
{{- else -}}
{{ required "tls.enabled needs tls.existingSecret (a Secret with tls.crt, tls.key, ca.crt) or tls.certManager.enabled" .Values.tls.existingSecret }}
{{- end -}}
{{- end -}}

{{/* Volumes and mounts every role shares: config, TLS, /tmp. (dict "ctx" $ "config" "<configmap suffix>") */}}
{{- define "shoal.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "shoal.fullname" .ctx }}-{{ .config }}
- name: tmp
  emptyDir: {}
{{- if .ctx.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "shoal.tlsSecret" .ctx }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end -}}

{{- define "shoal.commonMounts" -}}
- name: config
  mountPath: /etc/shoal/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/shoal/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Liveness and readiness on /health and /readiness of port (dict "ctx" $ "port" N). */}}
{{- define "shoal.probes" -}}
{{- if and .ctx.Values.tls.enabled .ctx.Values.tls.mtls }}
livenessProbe:
  tcpSocket: {port: {{ .port }}}
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  tcpSocket: {port: {{ .port }}}
  periodSeconds: 5
{{- else }}
livenessProbe:
  httpGet: {path: /health, port: {{ .port }}, scheme: {{ include "shoal.scheme" .ctx | upper }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readiness, port: {{ .port }}, scheme: {{ include "shoal.scheme" .ctx | upper }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}
{{- end -}}

{{/* Redis the tracker uses: "" when none. */}}
{{- define "shoal.redisAddr" -}}
{{- if .Values.redis.enabled -}}
{{ printf "%s-redis.%s:%d" (include "shoal.fullname" .) (include "shoal.svcDomain" .) (int .Values.redis.port) }}
{{- else -}}
{{ .Values.externalRedis.addr }}
{{- end -}}
{{- end -}}

{{- define "shoal.redisSecret" -}}
{{- if .Values.redis.enabled -}}
{{ default (printf "%s-redis" (include "shoal.fullname" .)) .Values.redis.existingSecret }}
{{- else -}}
{{ .Values.externalRedis.existingSecret }}
{{- end -}}
{{- end -}}

{{- define "shoal.redisSecretKey" -}}
{{- if .Values.redis.enabled -}}
{{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-password{{ end }}
{{- else -}}
{{ .Values.externalRedis.existingSecretKey }}
{{- end -}}
{{- end -}}

{{/* Upstream credentials: a dockerconfigjson Secret ("" when no upstream has any). */}}
{{- define "shoal.upstreamSecret" -}}
{{- $own := false -}}
{{- $existing := false -}}
{{- range .Values.upstreams.registries -}}
{{- if .username }}{{ $own = true }}{{ end -}}
{{- if .existingSecret }}{{ $existing = true }}{{ end -}}
{{- end -}}
{{- if and $own $existing -}}
{{- fail "upstreams: give credentials either as username/password or through upstreams.existingSecret, not both" -}}
{{- end -}}
{{- if $existing -}}
{{ required "upstreams.registries[].existingSecret needs upstreams.existingSecret (a kubernetes.io/dockerconfigjson Secret)" .Values.upstreams.existingSecret }}
{{- else if $own -}}
{{ include "shoal.fullname" . }}-upstreams
{{- end -}}
{{- end -}}

{{- define "shoal.buildindexTokenSecret" -}}
{{- if .Values.buildindex.existingSecret -}}
{{ .Values.buildindex.existingSecret }}
{{- else if .Values.buildindex.adminToken -}}
{{ include "shoal.fullname" . }}-buildindex
{{- end -}}
{{- end -}}
