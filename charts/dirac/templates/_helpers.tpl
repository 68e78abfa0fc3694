{{- define "dirac.labels" -}}
app.kubernetes.io/part-of: dirac
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "dirac.image" -}}
{{ .root.Values.image.registry }}/{{ .bin }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{- define "dirac.secretName" -}}
{{ .Values.secrets.existingSecret | default (printf "%s-dirac-secrets" .Release.Name) }}
{{- end -}}
