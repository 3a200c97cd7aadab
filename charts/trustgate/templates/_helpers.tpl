{{/* Name of the webhook configurations and the prefix of every object. */}}
{{- define "trustgate.fullname" -}}
{{- default "trustgate" .Values.fullnameOverride | trunc 53 | trimSuffix "-" -}}
{{- end -}}

{{- define "trustgate.webhookService" -}}{{ include "trustgate.fullname" . }}-webhook{{- end -}}
{{- define "trustgate.controllerName" -}}{{ include "trustgate.fullname" . }}-controller{{- end -}}
{{- define "trustgate.webhookName" -}}{{ include "trustgate.fullname" . }}-webhook{{- end -}}
{{- define "trustgate.certificateName" -}}{{ include "trustgate.fullname" . }}-webhook-tls{{- end -}}

{{- define "trustgate.labels" -}}
app.kubernetes.io/name: trustgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels that select one component's pods: call with (dict "root" $ "component" "webhook"). */}}
{{- define "trustgate.selectorLabels" -}}
app.kubernetes.io/name: trustgate
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* registry/repository:tag, or @digest when a digest is set; global.imageRegistry wins over image.registry. */}}
{{- define "trustgate.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $repository := .Values.image.repository -}}
{{- if $registry }}{{ $repository = printf "%s/%s" $registry $repository }}{{ end -}}
{{- if .Values.image.digest -}}
{{ $repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ $repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "trustgate.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod-level security: restricted Pod Security Standard. */}}
{{- define "trustgate.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "trustgate.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The Secret holding registry credentials, or "" when none is configured. */}}
{{- define "trustgate.credentialsSecret" -}}
{{- with .Values.webhook.registry.credentials -}}
{{- if .existingSecret }}{{ .existingSecret }}{{ else if .dockerconfigjson }}{{ include "trustgate.fullname" $ }}-registry-credentials{{ end -}}
{{- end -}}
{{- end -}}

{{/* A volume source for the registry CA bundle (key ca.crt), or "" when none is configured. */}}
{{- define "trustgate.caVolume" -}}
{{- with .Values.webhook.registry.ca -}}
{{- if .existingSecret -}}
secret:
  secretName: {{ .existingSecret }}
  items: [{key: ca.crt, path: ca.crt}]
{{- else if .existingConfigMap -}}
configMap:
  name: {{ .existingConfigMap }}
  items: [{key: ca.crt, path: ca.crt}]
{{- else if .certificates -}}
configMap:
  name: {{ include "trustgate.fullname" $ }}-registry-ca
  items: [{key: ca.crt, path: ca.crt}]
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespaces never sent to the webhooks: kube-system, the release namespace and the user's list. */}}
{{- define "trustgate.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludedNamespaces | uniq) }}
        - {{ . | quote }}
        {{- end }}
    {{- with .Values.webhook.namespaceSelectorExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* Every kind trustgate reads images from, for both webhooks. */}}
{{- define "trustgate.rules" -}}
rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [pods, pods/ephemeralcontainers, replicationcontrollers]
    scope: Namespaced
  - apiGroups: [apps]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [deployments, replicasets, statefulsets, daemonsets]
    scope: Namespaced
  - apiGroups: [batch]
    apiVersions: [v1]
    operations: [CREATE, UPDATE]
    resources: [jobs, cronjobs]
    scope: Namespaced
{{- end -}}

{{/* clientConfig of one webhook: call with (dict "root" $ "path" "/validate"). */}}
{{- define "trustgate.clientConfig" -}}
clientConfig:
  service:
    name: {{ include "trustgate.webhookService" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
{{- end -}}

{{- define "trustgate.webhookAnnotations" -}}
{{- if .Values.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "trustgate.certificateName" . }}
{{- end }}
{{- end -}}
