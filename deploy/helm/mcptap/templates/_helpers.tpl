{{- define "mcptap.labels" -}}
app.kubernetes.io/name: mcptap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "mcptap.selector" -}}
app.kubernetes.io/name: mcptap
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
