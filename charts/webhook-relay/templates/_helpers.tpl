{{/* Chart name, at most 63 characters. */}}
{{- define "webhook-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: <release>-<chart> unless the release name already holds the chart name. */}}
{{- define "webhook-relay.fullname" -}}
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

{{- define "webhook-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels the Deployment selects its pods by: stable for the release's life. */}}
{{- define "webhook-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhook-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "webhook-relay.labels" -}}
helm.sh/chart: {{ include "webhook-relay.chart" . }}
{{ include "webhook-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webhook-relay
{{- end }}

{{- define "webhook-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "webhook-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "webhook-relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The relay image: relayImage, falling back field by field to image. */}}
{{- define "webhook-relay.relayImage" -}}
{{- $repo := default .Values.image.repository .Values.relayImage.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.relayImage.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "webhook-relay.leaseName" -}}
{{- default (include "webhook-relay.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}
