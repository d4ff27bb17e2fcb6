{{/* The chart's name. */}}
{{- define "hookbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name. */}}
{{- define "hookbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hookbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hookbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hookbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: ingress, relay or all-in-one. */}}
{{- define "hookbridge.componentLabels" -}}
{{ include "hookbridge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "hookbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hookbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hookbridge.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Secret the env:KEY references come from. */}}
{{- define "hookbridge.secretName" -}}
{{- if .Values.secrets.create }}
{{- printf "%s-secrets" (include "hookbridge.fullname" .) }}
{{- else }}
{{- .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{- define "hookbridge.embedded" -}}
{{- if eq .Values.bus.backend "embedded" }}true{{ end }}
{{- end }}

{{/* Seconds of a duration written 25s, 2m or 1h. */}}
{{- define "hookbridge.seconds" -}}
{{- $d := toString . }}
{{- if hasSuffix "ms" $d }}1
{{- else if hasSuffix "s" $d }}{{ trimSuffix "s" $d | int }}
{{- else if hasSuffix "m" $d }}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else if hasSuffix "h" $d }}{{ mul (trimSuffix "h" $d | int) 3600 }}
{{- else }}{{ fail (printf "cannot read the duration %q: write it like 25s, 2m or 1h" $d) }}
{{- end }}
{{- end }}

{{/* A TOML array of strings. */}}
{{- define "hookbridge.tomlList" -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ $v | toString | quote }}{{ end }}]
{{- end }}

{{/* What every hookbridge container shares: image, security, config and secrets. */}}
{{- define "hookbridge.container" -}}
image: {{ include "hookbridge.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
args: [{{ .role | quote }}, "--config", "/etc/hookbridge/hookbridge.toml"]
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
{{- if include "hookbridge.secretName" .root }}
envFrom:
  - secretRef:
      name: {{ include "hookbridge.secretName" .root }}
{{- end }}
{{- if and (eq .role "relay") .root.Values.relay.staticMembership }}
env:
  # The StatefulSet pod's name: the relay's static Kafka group membership.
  - name: HOOKBRIDGE_BUS__KAFKA__INSTANCE_ID
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
{{- end }}
ports:
  {{- if ne .role "relay" }}
  - name: webhooks
    containerPort: 8080
    protocol: TCP
  {{- end }}
  - name: admin
    containerPort: 9090
    protocol: TCP
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  failureThreshold: 2
volumeMounts:
  - name: config
    mountPath: /etc/hookbridge
    readOnly: true
  {{- if .root.Values.providerDefinitions }}
  - name: providers
    mountPath: /etc/hookbridge-providers
    readOnly: true
  {{- end }}
  {{- with .root.Values.bus.nats.credsSecret.name }}
  - name: nats-creds
    mountPath: /etc/hookbridge-secrets/nats-creds
    readOnly: true
  {{- end }}
  {{- with .root.Values.bus.nats.tls.caSecret }}
  - name: nats-ca
    mountPath: /etc/hookbridge-secrets/nats-ca
    readOnly: true
  {{- end }}
  {{- with .root.Values.bus.nats.tls.clientSecret }}
  - name: nats-client
    mountPath: /etc/hookbridge-secrets/nats-client
    readOnly: true
  {{- end }}
  {{- with .root.Values.bus.kafka.tls.caSecret }}
  - name: kafka-ca
    mountPath: /etc/hookbridge-secrets/kafka-ca
    readOnly: true
  {{- end }}
  {{- with .root.Values.ingressTls.secretName }}
  - name: ingress-tls
    mountPath: /etc/hookbridge-tls
    readOnly: true
  {{- end }}
{{- end }}

{{/* The volumes behind hookbridge.container's mounts. */}}
{{- define "hookbridge.volumes" -}}
- name: config
  configMap:
    name: {{ include "hookbridge.fullname" . }}
{{- if .Values.providerDefinitions }}
- name: providers
  configMap:
    name: {{ include "hookbridge.fullname" . }}-providers
{{- end }}
{{- with .Values.bus.nats.credsSecret.name }}
- name: nats-creds
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.bus.nats.tls.caSecret }}
- name: nats-ca
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.bus.nats.tls.clientSecret }}
- name: nats-client
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.bus.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.ingressTls.secretName }}
- name: ingress-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}

{{/* Spread a component's pods over zones. */}}
{{- define "hookbridge.topologySpread" -}}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .root.Values.topologySpread.maxSkew }}
    topologyKey: {{ .root.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "hookbridge.componentLabels" . | nindent 8 }}
{{- end }}
{{- end }}

{{/* A component's pod template: dict with root, component, role, settings
(the component's values) and grace (its shutdown grace). */}}
{{- define "hookbridge.podTemplate" -}}
{{- $root := .root }}
metadata:
  labels:
    {{- include "hookbridge.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    checksum/config: {{ include "hookbridge.config" $root | sha256sum }}
    {{- with .settings.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "hookbridge.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  # hookbridge drains for its shutdown grace after SIGTERM; a little more here.
  terminationGracePeriodSeconds: {{ add (include "hookbridge.seconds" .grace) 5 }}
  containers:
    - name: {{ .component }}
      {{- include "hookbridge.container" (dict "root" $root "role" .role) | nindent 6 }}
      {{- if eq .role "run" }}
        - name: data
          mountPath: /var/lib/hookbridge
      {{- end }}
      resources:
        {{- toYaml .settings.resources | nindent 8 }}
  volumes:
    {{- include "hookbridge.volumes" $root | nindent 4 }}
  {{- include "hookbridge.topologySpread" . | nindent 2 }}
  {{- with .settings.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .settings.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .settings.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
