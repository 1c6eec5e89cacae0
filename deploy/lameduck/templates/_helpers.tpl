{{/* The name of every object of the release. */}}
{{- define "lameduck.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (default .Chart.Name .Values.nameOverride) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (default .Chart.Name .Values.nameOverride) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lameduck.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lameduck.labels" -}}
{{ include "lameduck.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The namespace-scoped rules the operator needs where it watches: base plus the enabled methods. */}}
{{- define "lameduck.watchRules" -}}
{{ .Files.Get "files/rbac/operator.yaml" }}
{{- if .Values.rbac.methods.exec }}
{{ .Files.Get "files/rbac/exec.yaml" }}
{{- end }}
{{- if .Values.rbac.methods.portForward }}
{{ .Files.Get "files/rbac/portforward.yaml" }}
{{- end }}
{{- if .Values.rbac.methods.ephemeralContainers }}
{{ .Files.Get "files/rbac/ephemeral-containers.yaml" }}
{{- end }}
{{- end -}}

{{- define "lameduck.webhookService" -}}{{ include "lameduck.fullname" . }}-webhook{{- end -}}
{{- define "lameduck.webhookSecret" -}}{{ include "lameduck.fullname" . }}-webhook-tls{{- end -}}

{{/* Namespaces whose pods never go to the webhook: the operator's own (it must start without
itself) and kube-system. */}}
{{- define "lameduck.webhookNamespaceSelector" -}}
{{- $selector := deepCopy .Values.webhook.namespaceSelector -}}
{{- $expressions := default list $selector.matchExpressions -}}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (list .Release.Namespace "kube-system")) -}}
{{- if eq .Values.rbac.scope "namespaces" -}}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" .Values.watchNamespaces) -}}
{{- end -}}
{{- $_ := set $selector "matchExpressions" $expressions -}}
{{- toYaml $selector -}}
{{- end -}}
