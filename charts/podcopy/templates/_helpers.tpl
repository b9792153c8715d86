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


{{/* destination.s3 with the evidence store's values filled in when it is enabled. */}}
{{- define "podcopy.s3" -}}
{{- $s3 := deepCopy .Values.config.destination.s3 }}
{{- if .Values.evidenceStore.enabled }}
{{- $name := printf "%s-evidence" (include "podcopy.fullname" .) }}
{{- if not $s3.endpoint }}
{{- if .Values.evidenceStore.hostNetwork }}
{{- $_ := set $s3 "endpoint" (printf "https://127.0.0.1:%v" .Values.evidenceStore.port) }}
{{- else }}
{{- $_ := set $s3 "endpoint" (printf "https://%s.%s.svc:%v" $name .Release.Namespace .Values.evidenceStore.port) }}
{{- end }}
{{- end }}
{{- if not $s3.bucket }}{{ $_ := set $s3 "bucket" .Values.evidenceStore.bucket }}{{ end }}
{{- if not $s3.credentialsSecret }}{{ $_ := set $s3 "credentialsSecret" $name }}{{ end }}
{{- if not $s3.caSecret }}{{ $_ := set $s3 "caSecret" (printf "%s-tls" $name) }}{{ end }}
{{- $_ := set $s3 "createBucket" true }}
{{- end }}
{{- toJson $s3 }}
{{- end -}}

{{/*
GOMEMLIMIT: 80 % of resources.limits.memory when it is given in Mi or Gi ("" otherwise).
*/}}
{{- define "podcopy.goMemLimit" -}}
{{- $m := toString (dig "limits" "memory" "" (.Values.resources | default dict)) -}}
{{- if hasSuffix "Mi" $m -}}
{{- div (mul (trimSuffix "Mi" $m | int) 4) 5 }}MiB
{{- else if hasSuffix "Gi" $m -}}
{{- div (mul (trimSuffix "Gi" $m | int) 4096) 5 }}MiB
{{- end -}}
{{- end -}}

{{/* The signer's URL as agents reach it. */}}
{{- define "podcopy.signerURL" -}}
{{- if .Values.signer.hostNetwork -}}
https://127.0.0.1:{{ .Values.signer.port }}
{{- else -}}
https://{{ include "podcopy.fullname" . }}-signer.{{ .Release.Namespace }}.svc:{{ .Values.signer.port }}
{{- end -}}
{{- end }}
