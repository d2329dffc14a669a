{{/* Names and labels shared by every template. */}}

{{- define "steadfast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: objects of two releases never collide, cluster-scoped ones included. */}}
{{- define "steadfast.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "steadfast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "steadfast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "steadfast.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "steadfast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: steadfast
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "steadfast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "steadfast.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "steadfast.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "steadfast.webhookService" -}}
{{- printf "%s-webhook" (include "steadfast.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "steadfast.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "steadfast.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* DNS names the API server uses for the webhook Service. */}}
{{- define "steadfast.webhookDNSNames" -}}
{{- $svc := include "steadfast.webhookService" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) | toJson -}}
{{- end -}}

{{/*
The admission handlers the operator registers (operator/steadfast/webhooks.py `register`): kopf serves each on
the path /<handler id>. Keep in step with that function; tests/integration/test_chart.py checks it.
*/}}
{{- define "steadfast.webhookHandlers" -}}
mutating:
  - {id: approval-identity, resource: approvalrequests, operations: [CREATE, UPDATE]}
  - {id: saga-identity, resource: tasksagas, operations: [CREATE, UPDATE]}
  - {id: monitor-rules, resource: healthmonitors, operations: [CREATE, UPDATE]}
  - {id: schedule-rules, resource: sagaschedules, operations: [CREATE, UPDATE]}
validating:
  - {id: approval-rules, resource: approvalrequests, operations: [CREATE, UPDATE]}
  - {id: saga-rules, resource: tasksagas, operations: [UPDATE]}
  - {id: sagatemplate-rules, resource: sagatemplates, operations: [CREATE, UPDATE]}
  - {id: clustersagatemplate-rules, resource: clustersagatemplates, operations: [CREATE, UPDATE], scope: Cluster}
{{- end -}}

{{- define "steadfast.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail "replicaCount > 1 needs peering.enabled: without kopf peering every replica would handle every resource" -}}
{{- end -}}
{{- if and (eq .Values.dapr.components.stateStore.type "postgresql") .Values.dapr.components.stateStore.enabled (not .Values.dapr.components.stateStore.postgresql.connectionStringSecret.name) -}}
{{- fail "dapr.components.stateStore.postgresql.connectionStringSecret.name is required with type postgresql" -}}
{{- end -}}
{{- end -}}

{{/*
The Secret holding the seal key (seal_key.py): made by the operator itself on first start, so that a
GitOps render (no lookup) never replaces it; it outlives upgrades and uninstall (delete it to rotate the key).
*/}}
{{- define "steadfast.sealKeyName" -}}
{{- printf "%s-seal-key" (include "steadfast.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "steadfast.peeringName" -}}
{{- default (include "steadfast.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/*
The Helm-generated webhook certificate as a YAML map (ca.crt, tls.crt, tls.key, base64). An existing Secret
is reused (lookup), so upgrades keep the certificate; without cluster access (helm template, Argo CD) a new
one is made on every render. Memoised in .Values so that the Secret, the configurations' caBundle and the
Deployment's checksum all see the same one within a render.
*/}}
{{- define "steadfast.webhookTLS" -}}
{{- if not (hasKey .Values "__webhookTLS") -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "steadfast.webhookSecret" .) -}}
{{- if and $existing (index ($existing.data | default dict) "tls.crt") (index ($existing.data | default dict) "ca.crt") -}}
{{- $_ := set .Values "__webhookTLS" (pick $existing.data "ca.crt" "tls.crt" "tls.key") -}}
{{- else -}}
{{- $days := int .Values.webhook.certificate.validityDays -}}
{{- $ca := genCA (printf "%s-webhook-ca" (include "steadfast.fullname" .)) $days -}}
{{- $names := include "steadfast.webhookDNSNames" . | fromJsonArray -}}
{{- $cert := genSignedCert (last $names) nil $names $days $ca -}}
{{- $_ := set .Values "__webhookTLS" (dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- toYaml (get .Values "__webhookTLS") -}}
{{- end -}}

{{/* The CA bundle the API server verifies the webhook with (helm provider). */}}
{{- define "steadfast.webhookCABundle" -}}
{{- index (include "steadfast.webhookTLS" . | fromYaml) "ca.crt" -}}
{{- end -}}

{{/* The console's pods: a name of their own, so that no operator Service or PodDisruptionBudget selects them. */}}
{{- define "steadfast.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "steadfast.name" . }}-console
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
