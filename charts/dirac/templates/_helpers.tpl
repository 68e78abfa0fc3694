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

{{- define "dirac.keysSecretName" -}}
{{ .Values.keys.existingSecret | default (printf "%s-dirac-keys" .Release.Name) }}
{{- end -}}

{{- define "dirac.tlsSecretName" -}}
{{ .Values.envoy.tls.secretName | default (printf "%s-dirac-ingress-tls" .Release.Name) }}
{{- end -}}

{{- define "dirac.sandboxClaim" -}}
{{ .Values.sandboxes.volume.existingClaim | default (printf "%s-dirac-sandboxes" .Release.Name) }}
{{- end -}}

{{/* The Service of a subsystem, as envoy and the pods reach it. */}}
{{- define "dirac.serviceHost" -}}
{{ .root.Release.Name }}-dirac-{{ .name }}.{{ .root.Release.Namespace }}.svc.cluster.local
{{- end -}}

{{/* Pod and container security of every workload: non-root, read-only root. */}}
{{- define "dirac.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dirac.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The HorizontalPodAutoscaler and PodDisruptionBudget of a Deployment
     named <release>-dirac-<name>, from its values (autoscaling, pdb). */}}
{{- define "dirac.scaling" -}}
{{- $root := .root }}
{{- $full := printf "%s-dirac-%s" $root.Release.Name .name }}
{{- if .values.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $full }}
  labels:
    {{- include "dirac.labels" $root | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $full }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- with .values.pdb }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $full }}
  labels:
    {{- include "dirac.labels" $root | nindent 4 }}
spec:
  minAvailable: {{ .minAvailable }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ $root.Release.Name }}
      app.kubernetes.io/name: dirac-{{ $.name }}
{{- end }}
{{- end -}}
