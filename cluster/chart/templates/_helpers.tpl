{{/* The fixed component name, shared by every object's labels and names. */}}
{{- define "teledock.name" -}}traffic-manager{{- end }}

{{/* Labels on every object. */}}
{{- define "teledock.labels" -}}
{{ include "teledock.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: teledock
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the manager's pods; they never change across upgrades. */}}
{{- define "teledock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "teledock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Cluster-scoped objects are shared by every release in the cluster, so their name carries the
release's namespace: two managers in two namespaces do not fight over one ClusterRole.
*/}}
{{- define "teledock.clusterName" -}}
{{ printf "teledock-%s-%s" (include "teledock.name" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "teledock.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "teledock.agentImage" -}}
{{ .Values.agentImage.repository }}:{{ .Values.agentImage.tag | default .Chart.AppVersion }}
{{- end }}
