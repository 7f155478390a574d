{{/*
Names. The full name is the release name when it already contains the chart
name ("openshell"), so `helm install openshell` gives objects named openshell.
*/}}
{{- define "openshell.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "openshell.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "openshell.headlessName" -}}
{{- printf "%s-headless" (include "openshell.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "openshell.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "openshell.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openshell.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "openshell.labels" -}}
helm.sh/chart: {{ include "openshell.chart" . }}
{{ include "openshell.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "openshell.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "openshell.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "openshell.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* host:port, with IPv6 addresses in brackets. Argument: (list host port). */}}
{{- define "openshell.hostPort" -}}
{{- $host := index . 0 -}}
{{- $port := index . 1 -}}
{{- if contains ":" $host -}}
{{- printf "[%s]:%v" $host $port -}}
{{- else -}}
{{- printf "%s:%v" $host $port -}}
{{- end -}}
{{- end -}}

{{/* cert-manager resources are rendered only when they would be used. */}}
{{- define "openshell.certManagerOn" -}}
{{- if and .Values.certManager.enabled (not .Values.server.disableTls) -}}true{{- end -}}
{{- end -}}

{{/*
Secrets cert-manager writes: certManager.*.secretName, or the full name with a
suffix, so that two releases in one namespace do not share them.
*/}}
{{- define "openshell.caSecretName" -}}
{{- default (printf "%s-ca" (include "openshell.fullname" .)) .Values.certManager.ca.secretName -}}
{{- end -}}

{{- define "openshell.certManagerServerSecretName" -}}
{{- default (printf "%s-server-tls" (include "openshell.fullname" .)) .Values.certManager.server.secretName -}}
{{- end -}}

{{- define "openshell.clientTlsSecretName" -}}
{{- default (printf "%s-client-tls" (include "openshell.fullname" .)) .Values.certManager.client.secretName -}}
{{- end -}}

{{- define "openshell.externalTlsSecretName" -}}
{{- printf "%s-external-tls" (include "openshell.fullname" .) -}}
{{- end -}}

{{/*
The external certificate: issued by certManager.serverIssuerRef for
certManager.externalDnsNames, served by SNI (--tls-sni) next to the internal one.
*/}}
{{- define "openshell.externalTlsOn" -}}
{{- if and (include "openshell.certManagerOn" .) .Values.certManager.serverIssuerRef -}}true{{- end -}}
{{- end -}}

{{/* Secret with the server tls.crt and tls.key. */}}
{{- define "openshell.serverSecretName" -}}
{{- default (include "openshell.certManagerServerSecretName" .) .Values.server.tls.existingSecret -}}
{{- end -}}

{{/* Secret with the client-CA bundle. */}}
{{- define "openshell.clientCaSecretName" -}}
{{- default (include "openshell.caSecretName" .) .Values.server.tls.clientCa.existingSecret -}}
{{- end -}}

{{/*
A client CA is mounted and passed only when client certificates are verified:
the gateway refuses --tls-client-ca with --tls-client-auth=none.
*/}}
{{- define "openshell.clientCaOn" -}}
{{- $t := .Values.server.tls -}}
{{- if and (not .Values.server.disableTls) $t.clientCa.enabled (ne $t.clientAuth "none") -}}true{{- end -}}
{{- end -}}

{{/*
Seconds in a Go duration ("1h30m", "500ms"); an empty one is the given
default. Argument: (list duration default).
*/}}
{{- define "openshell.seconds" -}}
{{- $d := index . 0 | default (index . 1) -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9.]+[a-zµ]+" $d -1 -}}
{{- $n := regexFind "^[0-9.]+" . -}}
{{- $total = addf $total (mulf (float64 $n) (get $units (trimPrefix $n .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
The common name of the server certificate: the longest Service name that fits
cert-manager's 64-character limit. The DNS names carry every full name.
*/}}
{{- define "openshell.serverCommonName" -}}
{{- $fullname := include "openshell.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $cn := $fullname -}}
{{- range list (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s" $fullname $ns) -}}
{{- if and (eq $cn $fullname) (le (len .) 64) -}}
{{- $cn = . -}}
{{- end -}}
{{- end -}}
{{- $cn -}}
{{- end -}}

{{/*
Fixed paths inside the container. The args name the user-visible files of
directory mounts; see the volumes in the workload template.
*/}}
{{- define "openshell.tlsDir" -}}/etc/openshell-tls{{- end -}}

{{/*
Why an external DNS name cannot be issued by an external issuer, or nothing
when it can: names that resolve only inside the cluster (or the machine), and
IP addresses, are for the chart's own CA (certManager.server.extraDnsNames,
extraIpAddresses). Argument: (list name clusterDomain).
*/}}
{{- define "openshell.internalNameReason" -}}
{{- $n := lower (index . 0) -}}
{{- $domain := lower (index . 1) -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+){3}$" $n -}}an IPv4 address
{{- else if contains ":" $n -}}an IPv6 address
{{- else if or (eq $n "localhost") (hasSuffix ".localhost" $n) -}}a loopback name
{{- else if or (hasSuffix ".svc" $n) (hasSuffix ".cluster.local" $n) (hasSuffix (printf ".%s" $domain) $n) -}}a cluster-internal name
{{- else if not (contains "." $n) -}}a single-label name (a Service's short name)
{{- end -}}
{{- end -}}

{{/* Fails the render with a clear message on values that cannot work. */}}
{{- define "openshell.validate" -}}
{{- $s := .Values.server -}}
{{- if eq (int $s.port) (int $s.healthPort) -}}
{{- fail (printf "server.healthPort (%v) must differ from server.port: the health listener is plaintext and separate from the TLS listener" $s.healthPort) -}}
{{- end -}}
{{- $drain := addf (include "openshell.seconds" (list $s.shutdownDelay "0s")) (include "openshell.seconds" (list $s.shutdownGrace "30s")) -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed server.shutdownDelay + server.shutdownGrace (%vs): kubelet would kill the gateway before it has drained" .Values.terminationGracePeriodSeconds $drain) -}}
{{- end -}}
{{- if not $s.disableTls -}}
{{- if and (not .Values.certManager.enabled) (not $s.tls.existingSecret) -}}
{{- fail "server.tls.existingSecret is required when certManager.enabled=false: name a Secret with tls.crt and tls.key (or set server.disableTls=true)" -}}
{{- end -}}
{{- if and (include "openshell.clientCaOn" .) (not .Values.certManager.enabled) (not $s.tls.clientCa.existingSecret) -}}
{{- fail "server.tls.clientCa.existingSecret is required when certManager.enabled=false and server.tls.clientCa.enabled=true (or set server.tls.clientCa.enabled=false or server.tls.clientAuth=none)" -}}
{{- end -}}
{{- if and (eq $s.tls.clientAuth "required") (not $s.tls.clientCa.enabled) -}}
{{- fail "server.tls.clientAuth=required needs a client CA: set server.tls.clientCa.enabled=true" -}}
{{- end -}}
{{- if and $s.tls.crl.keys (not $s.tls.crl.existingSecret) -}}
{{- fail "server.tls.crl.keys needs server.tls.crl.existingSecret" -}}
{{- end -}}
{{- if and $s.tls.crl.keys (not (include "openshell.clientCaOn" .)) -}}
{{- fail "server.tls.crl.keys needs a client CA: CRLs apply only to client certificates (set server.tls.clientCa.enabled=true and server.tls.clientAuth to optional or required)" -}}
{{- end -}}
{{- end -}}
{{- include "openshell.validateExternal" . -}}
{{- end -}}

{{/* The external certificate and the OpenShift Route. */}}
{{- define "openshell.validateExternal" -}}
{{- $cm := .Values.certManager -}}
{{- $names := $cm.externalDnsNames -}}
{{- if $cm.serverIssuerRef -}}
{{- if or .Values.server.disableTls (not $cm.enabled) -}}
{{- fail "certManager.serverIssuerRef needs certManager.enabled=true and TLS on (server.disableTls=false): the external Certificate is a cert-manager object served next to the internal one" -}}
{{- end -}}
{{- if not $names -}}
{{- fail "certManager.serverIssuerRef needs certManager.externalDnsNames: list the public DNS names the issuer should certify (e.g. gateway.example.com)" -}}
{{- end -}}
{{- range $names -}}
{{- $reason := include "openshell.internalNameReason" (list . $cm.clusterDomain) -}}
{{- if $reason -}}
{{- fail (printf "certManager.externalDnsNames: %q is %s, which an external issuer cannot certify: cluster-internal names and IP addresses belong on the internal certificate from the chart's CA (certManager.server.extraDnsNames, certManager.server.extraIpAddresses)" . $reason) -}}
{{- end -}}
{{- end -}}
{{- else if $names -}}
{{- fail "certManager.externalDnsNames needs certManager.serverIssuerRef: name the Issuer or ClusterIssuer (kind, name) that issues the external certificate" -}}
{{- end -}}
{{- $route := .Values.openshiftRoute -}}
{{- if $route.enabled -}}
{{- if not $route.host -}}
{{- fail "openshiftRoute.host is required when openshiftRoute.enabled=true: one of certManager.externalDnsNames" -}}
{{- end -}}
{{- if hasPrefix "*" $route.host -}}
{{- fail (printf "openshiftRoute.host %q is a wildcard: a Route serves one host; name one under the wildcard (e.g. gateway%s)" $route.host (trimPrefix "*" $route.host)) -}}
{{- end -}}
{{- $wildcard := printf "*.%s" (regexReplaceAll "^[^.]*\\." $route.host "") -}}
{{- if not (or (has $route.host $names) (has $wildcard $names)) -}}
{{- fail (printf "openshiftRoute.host %q must be one of certManager.externalDnsNames (%s) or match one of its wildcards: the Route passes TLS through, so the gateway's external certificate must name the host" $route.host (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Container args: the gateway's own flags, in --flag=value form. Empty values
are left out so that the binary's defaults apply.
*/}}
{{- define "openshell.args" -}}
{{- $s := .Values.server -}}
{{- $dir := include "openshell.tlsDir" . -}}
- {{ printf "--bind=%s" (include "openshell.hostPort" (list $s.bindAddress $s.port)) | quote }}
- {{ printf "--health-bind=%s" (include "openshell.hostPort" (list $s.bindAddress $s.healthPort)) | quote }}
{{- if $s.disableTls }}
- "--disable-tls"
{{- else }}
- {{ printf "--tls-cert=%s/server/tls.crt" $dir | quote }}
- {{ printf "--tls-key=%s/server/tls.key" $dir | quote }}
{{- if include "openshell.externalTlsOn" . }}
{{- /* Handshakes naming an external name get the external certificate; any other name, or none, the internal one. */}}
- {{ printf "--tls-sni=%s=%s/external" (join "," .Values.certManager.externalDnsNames) $dir | quote }}
{{- end }}
{{- if include "openshell.clientCaOn" . }}
- {{ printf "--tls-client-ca=%s/client-ca/ca.crt" $dir | quote }}
- {{ printf "--tls-client-auth=%s" $s.tls.clientAuth | quote }}
{{- end }}
{{- range $s.tls.crl.keys }}
- {{ printf "--tls-crl=%s/crl/%s" $dir . | quote }}
{{- end }}
{{- if $s.tls.reload.enabled }}
{{- with $s.tls.reload.debounce }}
- {{ printf "--tls-reload-debounce=%s" . | quote }}
{{- end }}
{{- with $s.tls.reload.poll }}
- {{ printf "--tls-reload-poll=%s" . | quote }}
{{- end }}
{{- else }}
- "--no-tls-reload"
{{- end }}
{{- with $s.handshakeTimeout }}
- {{ printf "--handshake-timeout=%s" . | quote }}
{{- end }}
{{- end }}
{{- with $s.logFormat }}
- {{ printf "--log-format=%s" . | quote }}
{{- end }}
{{- with $s.ocsfLog }}
- {{ printf "--ocsf-log=%s" . | quote }}
{{- end }}
{{- with $s.maxConnectionAge }}
- {{ printf "--max-connection-age=%s" . | quote }}
{{- end }}
{{- with $s.maxConnectionAgeGrace }}
- {{ printf "--max-connection-age-grace=%s" . | quote }}
{{- end }}
{{- with $s.shutdownDelay }}
- {{ printf "--shutdown-delay=%s" . | quote }}
{{- end }}
{{- with $s.shutdownGrace }}
- {{ printf "--shutdown-grace=%s" . | quote }}
{{- end }}
{{- range $s.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
