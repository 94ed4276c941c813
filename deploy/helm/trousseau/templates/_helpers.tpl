{{/*
How values reach the manifests, so that no value can add a key, an object
or a volume (the pod must read no ConfigMap, Secret or token):
- a scalar is written with `quote` (a string: one double-quoted YAML
  scalar, every line break escaped) or `toJson` (a number or a boolean);
- a map or a list goes through trousseau.yaml below, never bare toYaml.
The schema also refuses malformed values, but the templates do not rely on
it (helm --skip-schema-validation skips it); the rules on paths and the
fixed security settings are enforced here.
*/}}

{{/*
toYaml, refusing the line separators that YAML reads as line breaks but
nindent does not indent (U+2028, U+2029, U+0085, CR): go-yaml writes
U+2028 and U+2029 raw inside a block scalar, where one would end the
scalar early and make the rest of the value keys of the object around it.
Also refused: what toYaml cannot write (it then returns "", and the value
would silently vanish). Call: include "trousseau.yaml" (list "what" value).
*/}}
{{- define "trousseau.yaml" -}}
{{- $out := toYaml (index . 1) }}
{{- if eq $out "" }}
{{- fail (printf "%s: cannot be written as YAML (a key or value holds a line separator such as U+0085?)" (index . 0)) }}
{{- end }}
{{- if regexMatch "[\r\u0085\u2028\u2029]" $out }}
{{- fail (printf "%s: a value holds a line separator (CR, U+0085, U+2028 or U+2029)" (index . 0)) }}
{{- end }}
{{- $out }}
{{- end }}

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
app.kubernetes.io/name: {{ include "trousseau.name" . | quote }}
app.kubernetes.io/component: kms-plugin
{{- end }}

{{/* Every object's labels: the selector's and Helm's. */}}
{{- define "trousseau.labels" -}}
{{ include "trousseau.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ regexReplaceAll "[^A-Za-z0-9]+$" (include "trousseau.tag" . | trunc 63) "" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
{{- end }}

{{/* The label keys the chart sets; podLabels and the ServiceMonitor's labels may not set them. */}}
{{- define "trousseau.labelKeys" -}}
app.kubernetes.io/name app.kubernetes.io/component app.kubernetes.io/instance app.kubernetes.io/version app.kubernetes.io/managed-by helm.sh/chart
{{- end }}

{{- define "trousseau.tag" -}}
{{- default (ternary (printf "%s-fips" .Chart.AppVersion) .Chart.AppVersion (eq .Values.fips true)) .Values.image.tag }}
{{- end }}

{{/* The image: repository@digest when a digest is given, else repository:tag. */}}
{{- define "trousseau.image" -}}
{{- if .Values.image.digest }}
{{- if not (regexMatch `^sha256:[0-9a-f]{64}$` (toString .Values.image.digest)) }}
{{- fail (printf "image.digest %q: want sha256:<64 hex digits>" (toString .Values.image.digest)) }}
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
The security settings, fixed (the same as the kustomize base and the static
pod): uid and gid 65532, no privilege, every capability dropped, read-only
root, RuntimeDefault seccomp. Values may only add supplementalGroups.
*/}}
{{- define "trousseau.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
{{- with dig "supplementalGroups" (list) (default dict .Values.podSecurityContext) }}
supplementalGroups: {{ toJson . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "trousseau.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Why a path is not a clean absolute path; empty when it is. */}}
{{- define "trousseau.pathProblem" -}}
{{- if not (kindIs "string" .) }}not a string
{{- else if not (regexMatch `^(/[A-Za-z0-9._+@-]+)+$` .) }}not a clean absolute path (letters, digits and ._+@- between single slashes, no trailing slash)
{{- else if regexMatch `/\.\.?(/|$)` . }}has a . or .. component
{{- end }}
{{- end }}

{{/*
The node's paths the pod may mount (docs/packaging.md, "Host paths"):
- hostPaths.*: Trousseau's own directories, named trousseau... directly
  in /etc, /var/lib, /var/run, /run, /opt or /srv, or below one;
- extraHostPathVolumes, read-only: those, /var/run/kmsplugin and
  /run/kmsplugin (other KMS plugins' sockets), /var/lib/softhsm, or a
  directory below /opt or /usr (a vendor's PKCS#11 module and libraries);
- extraHostPathVolumes with readOnly false: /var/lib/softhsm,
  /var/lib/trousseau..., or below /opt.
So never /, a top-level directory, nor what the node's kubelet, runtime,
etcd or users keep: /etc, /var, /run, /proc, /sys, /dev, /home, /root,
/var/lib/kubelet, /etc/kubernetes, container runtime sockets.
*/}}
{{- define "trousseau.ownDir" -}}^/(etc|var/lib|var/run|run|opt|srv)/trousseau[^/]*(/[^/]+)*${{- end }}
{{- define "trousseau.extraDir" -}}^(/(etc|var/lib|var/run|run|opt|srv)/trousseau[^/]*|/var/run/kmsplugin|/run/kmsplugin|/var/lib/softhsm)(/[^/]+)*$|^/(opt|usr)(/[^/]+)+${{- end }}
{{- define "trousseau.writableDir" -}}^(/var/lib/trousseau[^/]*|/var/lib/softhsm)(/[^/]+)*$|^/opt(/[^/]+)+${{- end }}

{{/*
Checks of the values that the container's fixed paths, the host network
and the rules above make necessary; each failure says what to change.
*/}}
{{- define "trousseau.validate" -}}
{{- range $k := list "config" "state" "socket" }}
{{- $p := index $.Values.hostPaths $k }}
{{- with include "trousseau.pathProblem" $p }}
{{- fail (printf "hostPaths.%s %q: %s" $k (toString $p) .) }}
{{- end }}
{{- if not (regexMatch (include "trousseau.ownDir" $) $p) }}
{{- fail (printf "hostPaths.%s %q: want a directory of Trousseau's own, named trousseau... in /etc, /var/lib, /var/run, /run, /opt or /srv (or below one), never a directory the node uses for something else" $k $p) }}
{{- end }}
{{- end }}
{{- if not (regexMatch `^[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*$` (toString .Values.configFile)) }}
{{- fail (printf "configFile %q: want a file name in hostPaths.config" (toString .Values.configFile)) }}
{{- end }}
{{- $listen := printf "127.0.0.1:%v" .Values.health.port }}
{{- with .Values.config }}
{{- $socket := default "/var/run/trousseau/kms.sock" .socket }}
{{- if not (regexMatch `^/var/run/trousseau/[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*$` (toString $socket)) }}
{{- fail (printf "config.socket %q: the socket's directory is mounted at /var/run/trousseau (hostPaths.socket on the node)" (toString $socket)) }}
{{- end }}
{{- $state := default "/var/lib/trousseau" .stateDir }}
{{- if ne (trimSuffix "/" (toString $state)) "/var/lib/trousseau" }}
{{- fail (printf "config.stateDir %q: the state directory is mounted at /var/lib/trousseau (hostPaths.state on the node)" (toString $state)) }}
{{- end }}
{{- $listen = toString (default "127.0.0.1:8787" (dig "listen" "" (default dict .health))) }}
{{- if not (hasSuffix (printf ":%v" $.Values.health.port) $listen) }}
{{- fail (printf "config.health.listen %q: its port must be health.port (%v), which the probes and the container port use" $listen $.Values.health.port) }}
{{- end }}
{{- end }}
{{- include "trousseau.validateScraped" (list . $listen) }}
{{- /* The security settings are fixed: only supplementalGroups is a value. */}}
{{- if hasKey .Values "securityContext" }}
{{- fail "securityContext: the container's security settings are fixed (no privilege, every capability dropped, read-only root); remove it" }}
{{- end }}
{{- range $k, $_ := .Values.podSecurityContext }}
{{- if ne $k "supplementalGroups" }}
{{- fail (printf "podSecurityContext.%s: the pod runs as uid and gid 65532, non-root, with RuntimeDefault seccomp, whatever the values; only supplementalGroups may be set" $k) }}
{{- end }}
{{- end }}
{{- range dig "supplementalGroups" (list) (default dict .Values.podSecurityContext) }}
{{- if not (and (or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .)) (ge (float64 .) 1.0) (le (float64 .) 4294967294.0) (eq (float64 .) (floor (float64 .)))) }}
{{- fail (printf "podSecurityContext.supplementalGroups: %v: want a gid other than 0 (root's group)" .) }}
{{- end }}
{{- end }}
{{- $labelKeys := splitList " " (include "trousseau.labelKeys" .) }}
{{- $metrics := .Values.metrics }}
{{- range $what, $m := dict "podLabels" .Values.podLabels "metrics.serviceMonitor.labels" $metrics.serviceMonitor.labels "metrics.prometheusRule.labels" $metrics.prometheusRule.labels "metrics.grafanaDashboard.labels" $metrics.grafanaDashboard.labels }}
{{- range $k, $_ := $m }}
{{- if or (has $k $labelKeys) (and (eq $what "metrics.grafanaDashboard.labels") (eq $k "grafana_dashboard")) }}
{{- fail (printf "%s: %s is a label the chart sets" $what $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- if hasKey (default dict .Values.podAnnotations) "trousseau.io/config" }}
{{- fail "podAnnotations: trousseau.io/config is the chart's own annotation (set `config` instead)" }}
{{- end }}
{{- /* Extra host paths: see the rules above. */}}
{{- $fixed := list (include "trousseau.configMount" .) (include "trousseau.stateMount" .) (include "trousseau.socketMount" .) (include "trousseau.renderedConfigMount" .) "/tmp" "/trousseau" "/proc" "/sys" "/dev" }}
{{- $names := list }}
{{- $mounts := list }}
{{- range $v := .Values.extraHostPathVolumes }}
{{- $name := toString .name }}
{{- if or (not (regexMatch `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$` $name)) (has $name (list "config" "state" "socket" "tmp" "rendered-config")) (has $name $names) }}
{{- fail (printf "extraHostPathVolumes %q: want a volume name (DNS label) not used by the chart or another extra volume" $name) }}
{{- end }}
{{- $names = append $names $name }}
{{- with include "trousseau.pathProblem" .hostPath }}
{{- fail (printf "extraHostPathVolumes %q: hostPath %q: %s" $name (toString $v.hostPath) .) }}
{{- end }}
{{- with include "trousseau.pathProblem" .mountPath }}
{{- fail (printf "extraHostPathVolumes %q: mountPath %q: %s" $name (toString $v.mountPath) .) }}
{{- end }}
{{- $ro := ne (toString .readOnly) "false" }}
{{- if $ro }}
{{- if not (regexMatch (include "trousseau.extraDir" $) .hostPath) }}
{{- fail (printf "extraHostPathVolumes %q: hostPath %s: want a path in a trousseau... directory of /etc, /var/lib, /var/run, /run, /opt or /srv, in /var/run/kmsplugin, /run/kmsplugin or /var/lib/softhsm, or below /opt or /usr (never /, /etc, /var, /run, /proc, /sys, /dev, the kubelet's, etcd's or the container runtime's directories)" $name .hostPath) }}
{{- end }}
{{- else if not (regexMatch (include "trousseau.writableDir" $) .hostPath) }}
{{- fail (printf "extraHostPathVolumes %q: hostPath %s with readOnly false: only /var/lib/softhsm, /var/lib/trousseau... or a directory below /opt may be writable" $name .hostPath) }}
{{- end }}
{{- if not (has (toString (default "Directory" .type)) (list "Directory" "File" "Socket")) }}
{{- fail (printf "extraHostPathVolumes %q: type %v: want Directory, File or Socket (a path the node already has; the kubelet would create the others as root)" $name .type) }}
{{- end }}
{{- $mount := .mountPath }}
{{- range $fixed }}
{{- if or (eq $mount .) (hasPrefix (printf "%s/" .) $mount) (hasPrefix (printf "%s/" $mount) .) }}
{{- fail (printf "extraHostPathVolumes %q: mountPath %s is, is in or holds the chart's own mount or the image's %s" $name $mount .) }}
{{- end }}
{{- end }}
{{- if has $mount $mounts }}
{{- fail (printf "extraHostPathVolumes %q: mountPath %s is another extra volume's" $name $mount) }}
{{- end }}
{{- $mounts = append $mounts $mount }}
{{- end }}
{{- end }}

{{/*
A ServiceMonitor or PrometheusRule is refused while the plugins' /metrics
listens on the node's loopback, where Prometheus cannot scrape it (and the
alerts would only say that every node is absent). With config empty the
nodes' files decide: metrics.nodeHealthListen says what they set.
Call: include "trousseau.validateScraped" (list . listen), listen being
config.health.listen or its default.
*/}}
{{- define "trousseau.validateScraped" -}}
{{- $ := index . 0 }}
{{- $listen := index . 1 }}
{{- $m := $.Values.metrics }}
{{- $node := toString (default "" $m.nodeHealthListen) }}
{{- $what := "" }}
{{- if $m.serviceMonitor.enabled }}{{ $what = "metrics.serviceMonitor.enabled" }}{{ else if $m.prometheusRule.enabled }}{{ $what = "metrics.prometheusRule.enabled" }}{{ end }}
{{- if and $.Values.config $node }}
{{- fail (printf "metrics.nodeHealthListen %q: config is set, so every node runs config.health.listen; set that instead" $node) }}
{{- end }}
{{- if and (not $.Values.config) $node }}
{{- if not (hasSuffix (printf ":%v" $.Values.health.port) $node) }}
{{- fail (printf "metrics.nodeHealthListen %q: its port must be health.port (%v), which the Service and the probes use" $node $.Values.health.port) }}
{{- end }}
{{- $listen = $node }}
{{- end }}
{{- if and $what (or (hasPrefix "127." $listen) (hasPrefix "localhost:" $listen) (hasPrefix "[::1]:" $listen)) }}
{{- if $.Values.config }}
{{- fail (printf "%s: config.health.listen %q is the node's loopback, which Prometheus cannot reach: set config.health.listen to an address your firewall protects (e.g. 0.0.0.0:%v)" $what $listen $.Values.health.port) }}
{{- else }}
{{- fail (printf "%s: the nodes' health.listen (config is empty: metrics.nodeHealthListen, by default the plugin's) is %q, the node's loopback, which Prometheus cannot reach: bind it to an address your firewall protects in the nodes' files and set metrics.nodeHealthListen to the same (e.g. 0.0.0.0:%v), or set config" $what $listen $.Values.health.port) }}
{{- end }}
{{- end }}
{{- end }}
