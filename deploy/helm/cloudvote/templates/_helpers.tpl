{{/*
Shared snippets. Object names are fixed (vote, redis, postgres, ...), not prefixed with the
release name as many charts do: nginx.conf, pgbouncer.ini and the services' URLs name the
Services by those short names, and the files are the kustomize base's own (files/ links to
them). So one namespace holds one cloudvote release, as one namespace holds one overlay.
*/}}

{{/*
Labels on every object's metadata (the recommended app.kubernetes.io/* set).
Call with (dict "root" $ "name" "vote" "component" "web").
helm.sh/chart says which chart version made an object; it stays off pod templates and
selectors (see cloudvote.templateLabels).
https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/
*/}}
{{- define "cloudvote.labels" -}}
{{ include "cloudvote.templateLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 }}
{{- end }}

{{/*
Labels on pod templates and claim templates. No chart version here: a label change on a
pod template rolls every pod, and a StatefulSet's volumeClaimTemplates cannot change at
all, so a version label there would make every chart upgrade either a restart or an error.
No app.kubernetes.io/version either, for the reason base/kustomization.yaml gives: the
version is the image tag, which values can change without the label following.
*/}}
{{- define "cloudvote.templateLabels" -}}
app.kubernetes.io/name: {{ .name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: cloudvote
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/*
An image reference from one entry of .Values.images. A digest, when set, wins over the
tag: registry/repository@sha256:... is immutable, a tag can be moved by whoever can push.
global.imageRegistry, when set, replaces every image's registry (one mirror for all).
Call with (dict "root" $ "image" .Values.images.vote "name" "vote").
*/}}
{{- define "cloudvote.image" -}}
{{- $image := .image -}}
{{- if and (eq $image.tag "latest") (not $image.digest) -}}
{{- fail (printf "images.%s.tag: \"latest\" is refused: it names different bits from one day to the next, so a rollback cannot go back. Pin a version tag or a digest." .name) -}}
{{- end -}}
{{- $registry := .root.Values.global.imageRegistry | default $image.registry -}}
{{- $repository := $image.repository -}}
{{- if $registry }}{{ $repository = printf "%s/%s" $registry $repository }}{{ end -}}
{{- if $image.digest -}}
{{ $repository }}@{{ $image.digest }}
{{- else -}}
{{ $repository }}:{{ $image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* image: and imagePullPolicy: for a container. Same arguments as cloudvote.image. */}}
{{- define "cloudvote.imageFields" -}}
image: {{ include "cloudvote.image" . }}
imagePullPolicy: {{ .image.pullPolicy }}
{{- end }}

{{/* The Secret with the passwords: the operator's (existingSecret) or the chart's. */}}
{{- define "cloudvote.credentialsSecret" -}}
{{ .Values.credentials.existingSecret | default "cloudvote-credentials" }}
{{- end }}

{{/* The StorageClass that claims name; empty means the cluster's default class. */}}
{{- define "cloudvote.storageClassName" -}}
{{- if .Values.storageClass.create -}}
{{ .Values.storageClass.name }}
{{- else -}}
{{ .Values.persistence.storageClassName }}
{{- end -}}
{{- end }}

{{/*
The pod's nodeSelector: Linux always (base/vote.yaml explains), plus placement.nodeSelector
(values-prod.yaml adds kubernetes.io/arch: amd64).
*/}}
{{- define "cloudvote.nodeSelector" -}}
nodeSelector:
  {{- toYaml (merge (dict) .Values.placement.nodeSelector (dict "kubernetes.io/os" "linux")) | nindent 2 }}
{{- end }}

{{/*
The topology spread of a web Deployment: across zones first when placement.zoneSpread is
on (ScheduleAnyway: a strong preference, overlays/prod/placement.yaml explains), then
across nodes. Call with (dict "root" $ "name" "vote" "nodes" "DoNotSchedule"); add
"zones" false for a workload that spreads over nodes only (the worker).
*/}}
{{- define "cloudvote.topologySpread" -}}
topologySpreadConstraints:
  {{- if and .root.Values.placement.zoneSpread (dig "zones" true .) }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        app.kubernetes.io/name: {{ .name }}
  {{- end }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ .nodes }}
    {{- if eq .nodes "DoNotSchedule" }}
    nodeTaintsPolicy: Honor
    {{- end }}
    matchLabelKeys: [pod-template-hash]
    labelSelector:
      matchLabels:
        app.kubernetes.io/name: {{ .name }}
{{- end }}

{{/*
The ConfigMaps' contents, one template each, so that the ConfigMaps and the pods'
checksum/config annotations read the same bytes.
*/}}
{{- define "cloudvote.config.polls" -}}
polls.yaml: |
  {{- .Values.pollsOverride | default (.Files.Get "files/polls.yaml") | nindent 2 }}
{{- end }}

{{- define "cloudvote.config.settings" -}}
LOG_LEVEL: {{ .Values.settings.logLevel | quote }}
CLOUDVOTE_POLLS_FILE: /etc/cloudvote/polls.yaml
WORKER_CLAIM_IDLE_MS: {{ .Values.settings.workerClaimIdleMs | toString | quote }}
{{- end }}

{{- define "cloudvote.config.gateway-nginx" -}}
nginx.conf: |
  {{- .Files.Get "files/nginx.conf" | nindent 2 }}
{{- end }}

{{- define "cloudvote.config.redis-start" -}}
redis-start.sh: |
  {{- .Files.Get "files/redis-start.sh" | nindent 2 }}
{{- end }}

{{- define "cloudvote.config.pgbouncer" -}}
pgbouncer.ini: |
  {{- .Files.Get "files/pgbouncer.ini" | nindent 2 }}
{{- end }}

{{- define "cloudvote.config.pod-helpers" -}}
{{- range $file := list "ship-logs.sh" "snapshot_results.py" "stats_adapter.py" }}
{{ $file }}: |
  {{- $.Files.Get (printf "files/%s" $file) | nindent 2 }}
{{- end }}
{{- end }}

{{/*
checksum/config: a hash of the ConfigMaps a pod reads. kustomize gives each generated
ConfigMap a content-hash suffix, so a changed file changes the pod template and rolls the
pods; here the names stay fixed, and this annotation does the same job: edit polls.yaml,
`helm upgrade`, and the pods that mount it are replaced (the app reads the file at start).
Call with (dict "root" $ "configs" (list "polls" "settings")).
https://helm.sh/docs/howto/charts_tips_and_tricks/#automatically-roll-deployments
*/}}
{{- define "cloudvote.configChecksum" -}}
{{- $content := "" -}}
{{- range .configs -}}
{{- $content = print $content (include (printf "cloudvote.config.%s" .) $.root) -}}
{{- end -}}
checksum/config: {{ sha256sum $content }}
{{- end }}

{{/* The container hardening every container carries (base/vote.yaml explains it). */}}
{{- define "cloudvote.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
{{- end }}

{{/*
The pod's security context. Call with (dict "id" 10001 "fsGroup" true "onRootMismatch" false).
*/}}
{{- define "cloudvote.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .id }}
  runAsGroup: {{ .id }}
  {{- if .fsGroup }}
  fsGroup: {{ .id }}
  {{- end }}
  {{- if .onRootMismatch }}
  fsGroupChangePolicy: OnRootMismatch
  {{- end }}
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* Leave a lost node after 30 s instead of 300 s (base/vote.yaml explains the taints). */}}
{{- define "cloudvote.fastEviction" -}}
tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
  - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
{{- end }}

{{/* The HPA behaviour of the web services (base/vote.yaml explains each field). */}}
{{- define "cloudvote.webScalingBehavior" -}}
behavior:
  scaleUp:
    stabilizationWindowSeconds: 0
    selectPolicy: Max
    policies:
      - type: Percent
        value: 100
        periodSeconds: 60
      - type: Pods
        value: 2
        periodSeconds: 60
  scaleDown:
    stabilizationWindowSeconds: 300
    selectPolicy: Min
    policies:
      - type: Percent
        value: 50
        periodSeconds: 60
{{- end }}

{{/* A PodDisruptionBudget. Call with (dict "root" $ "name" "vote" "component" "web" "pdb" .Values.vote.pdb). */}}
{{- define "cloudvote.pdb" -}}
{{- if .pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "cloudvote.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
{{- end }}
{{- end }}

{{/* The pull secrets every ServiceAccount names (global.imagePullSecrets). */}}
{{- define "cloudvote.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
