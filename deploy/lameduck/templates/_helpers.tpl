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

{{/* The rules of one files/rbac file (`file`) as a YAML list, with every rule that carries
`resourceNames` (the operator's default names there) narrowed to `name` instead: the release's
Lease or Secret. Call with (dict "root" $ "file" "files/rbac/..." "name" "..."). */}}
{{- define "lameduck.namedRules" -}}
{{- $name := .name -}}
{{- range (.root.Files.Get .file | fromYamlArray) }}
- apiGroups: {{ toJson .apiGroups }}
  resources: {{ toJson .resources }}
  verbs: {{ toJson .verbs }}
  {{- if hasKey . "resourceNames" }}
  resourceNames: [{{ $name | quote }}]
  {{- end }}
{{- end }}
{{- end -}}

{{/* Namespaces the operator never acts in: always the release's own and kube-system (as the
webhook skips them, whatever operator.excludeNamespaces says), then operator.excludeNamespaces,
without duplicates, comma-separated. */}}
{{- define "lameduck.excludeNamespaces" -}}
{{- concat (list .Release.Namespace "kube-system") (default list .Values.operator.excludeNamespaces) | uniq | join "," -}}
{{- end -}}

{{- define "lameduck.webhookService" -}}{{ include "lameduck.fullname" . }}-webhook{{- end -}}
{{- define "lameduck.webhookSecret" -}}{{ include "lameduck.fullname" . }}-webhook-tls{{- end -}}

{{/* Namespaces whose pods never go to the webhook: the operator's own (it must start without
itself), kube-system, and operator.excludeNamespaces; ANDed with the user's selector. */}}
{{- define "lameduck.webhookNamespaceSelector" -}}
{{- $selector := deepCopy .Values.webhook.namespaceSelector -}}
{{- $expressions := default list $selector.matchExpressions -}}
{{- $excluded := concat (list .Release.Namespace "kube-system") (default list .Values.operator.excludeNamespaces) | uniq -}}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded) -}}
{{- if eq .Values.rbac.scope "namespaces" -}}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" .Values.watchNamespaces) -}}
{{- end -}}
{{- $_ := set $selector "matchExpressions" $expressions -}}
{{- toYaml $selector -}}
{{- end -}}
