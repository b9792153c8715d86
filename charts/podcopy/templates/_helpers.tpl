{{- define "podcopy.fullname" -}}
{{- printf "%s-agent" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podcopy.labels" -}}
app.kubernetes.io/name: podcopy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "podcopy.agentSelector" -}}
app.kubernetes.io/name: podcopy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "podcopy.analysisSelector" -}}
app.kubernetes.io/name: podcopy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: analysis
{{- end -}}

{{- define "podcopy.destinationNamespace" -}}
{{- .Values.config.destination.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "podcopy.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "podcopy.fullname" .) -}}
{{- end -}}

