{{/* The issuer's name: its Deployment, Service and service account. */}}
{{- define "meshca.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The ClusterRole of the istio-ca-root-cert writer; it owns what the
issuer writes there (ConfigMaps, Lease), so deleting it deletes them. */}}
{{- define "meshca.rootCertRole" -}}
{{- printf "%s-%s-istio-root-cert" (include "meshca.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "meshca.rootname" -}}
{{- printf "%s-root" (include "meshca.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "meshca.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "meshca.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "meshca.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{- define "meshca.tag" -}}
{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The issuer Service's DNS names. */}}
{{- define "meshca.issuerHosts" -}}
{{- $svc := printf "%s.%s.svc" (include "meshca.fullname" .) .Release.Namespace -}}
{{- .Values.issuer.hosts | default (list $svc (printf "%s.cluster.local" $svc)) | toJson -}}
{{- end -}}

{{/* Hardened settings every pod and container gets. */}}
{{- define "meshca.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "meshca.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The store section of a meshca config; . is a store value. */}}
{{- define "meshca.store" -}}
{{- if eq .driver "postgres" -}}
{{- if not .dsnSecret.name -}}
{{- fail "store.driver postgres needs store.dsnSecret.name (a Secret holding the DSN)" -}}
{{- end -}}
driver: postgres
dsnFile: /etc/meshca/store/{{ .dsnSecret.key }}
{{- else -}}
driver: sqlite
{{- end -}}
{{- end -}}

{{/* The issuer's root CA Secret name, or "" when it has none. */}}
{{- define "meshca.rootCASecret" -}}
{{- if .Values.issuer.rootCA.existingSecret -}}
{{ .Values.issuer.rootCA.existingSecret }}
{{- else if .Values.issuer.rootCA.keyPEM -}}
{{ include "meshca.fullname" . }}-root-ca
{{- end -}}
{{- end -}}

{{- define "meshca.joinTokenSecret" -}}
{{- if .Values.issuer.upstream.joinTokenSecret -}}
{{ .Values.issuer.upstream.joinTokenSecret }}
{{- else if .Values.issuer.upstream.joinToken -}}
{{ include "meshca.fullname" . }}-join-token
{{- end -}}
{{- end -}}

{{/* The operations probes, on the metrics port of the container. */}}
{{- define "meshca.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .Values.metrics.port }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ .Values.metrics.port }}}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .Values.metrics.port }}}
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}
