{{/* The chart's name, and the objects' name (the release's if it holds the chart's name). */}}
{{- define "trousseau.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trousseau.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "trousseau.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "trousseau.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "trousseau.serviceAccountName" -}}
{{- default (include "trousseau.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
The selector: the same two labels as the kustomize base, so that a
DaemonSet applied with kustomize can be taken over by the chart (a
selector cannot change).
*/}}
{{- define "trousseau.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trousseau.name" . }}
app.kubernetes.io/component: kms-plugin
{{- end }}

{{/* Every object's labels: the selector's and Helm's. */}}
{{- define "trousseau.labels" -}}
{{ include "trousseau.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "trousseau.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trousseau.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The image: repository@digest when a digest is given, else repository:tag. */}}
{{- define "trousseau.image" -}}
{{- if .Values.image.digest }}
{{- if not (hasPrefix "sha256:" .Values.image.digest) }}
{{- fail (printf "image.digest %q: want sha256:<hex>" .Values.image.digest) }}
{{- end }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "trousseau.tag" .) }}
{{- end }}
{{- end }}

{{/* The container's fixed paths, which the plugin's config names. */}}
{{- define "trousseau.configMount" -}}/etc/trousseau{{- end }}
{{- define "trousseau.stateMount" -}}/var/lib/trousseau{{- end }}
{{- define "trousseau.socketMount" -}}/var/run/trousseau{{- end }}
{{- define "trousseau.renderedConfigMount" -}}/etc/trousseau-chart{{- end }}

{{/* The config file the plugin is started with. */}}
{{- define "trousseau.configPath" -}}
{{- if .Values.config }}
{{- printf "%s/config.yaml" (include "trousseau.renderedConfigMount" .) }}
{{- else }}
{{- printf "%s/%s" (include "trousseau.configMount" .) .Values.configFile }}
{{- end }}
{{- end }}

{{/*
Checks of the values that the container's fixed paths and the host network
make necessary; each failure says what to change.
*/}}
{{- define "trousseau.validate" -}}
{{- range $k, $p := .Values.hostPaths }}
{{- if not (hasPrefix "/" $p) }}
{{- fail (printf "hostPaths.%s %q: want an absolute path on the node" $k $p) }}
{{- end }}
{{- end }}
{{- if or (contains "/" .Values.configFile) (eq .Values.configFile "") }}
{{- fail (printf "configFile %q: want a file name in hostPaths.config" .Values.configFile) }}
{{- end }}
{{- $listen := printf "127.0.0.1:%v" .Values.health.port }}
{{- with .Values.config }}
{{- $socket := default "/var/run/trousseau/kms.sock" .socket }}
{{- if not (hasPrefix "/var/run/trousseau/" $socket) }}
{{- fail (printf "config.socket %q: the socket's directory is mounted at /var/run/trousseau (hostPaths.socket on the node)" $socket) }}
{{- end }}
{{- $state := default "/var/lib/trousseau" .stateDir }}
{{- if ne (trimSuffix "/" $state) "/var/lib/trousseau" }}
{{- fail (printf "config.stateDir %q: the state directory is mounted at /var/lib/trousseau (hostPaths.state on the node)" $state) }}
{{- end }}
{{- $listen = default "127.0.0.1:8787" (dig "listen" "" (default dict .health)) }}
{{- if not (hasSuffix (printf ":%v" $.Values.health.port) $listen) }}
{{- fail (printf "config.health.listen %q: its port must be health.port (%v), which the probes and the container port use" $listen $.Values.health.port) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.config (or (hasPrefix "127." $listen) (hasPrefix "localhost:" $listen) (hasPrefix "[::1]:" $listen)) }}
{{- fail (printf "metrics.serviceMonitor.enabled: config.health.listen %q is the node's loopback, which Prometheus cannot reach; bind an address your firewall protects" $listen) }}
{{- end }}
{{- $fixed := list (include "trousseau.configMount" .) (include "trousseau.stateMount" .) (include "trousseau.socketMount" .) (include "trousseau.renderedConfigMount" .) "/tmp" }}
{{- range .Values.extraHostPathVolumes }}
{{- if or (not (hasPrefix "/" .hostPath)) (not (hasPrefix "/" .mountPath)) }}
{{- fail (printf "extraHostPathVolumes %q: hostPath and mountPath must be absolute" .name) }}
{{- end }}
{{- if has (trimSuffix "/" .mountPath) $fixed }}
{{- fail (printf "extraHostPathVolumes %q: mountPath %s is the chart's own mount" .name .mountPath) }}
{{- end }}
{{- end }}
{{- end }}
