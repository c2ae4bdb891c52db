{{/* Labels Helm adds to every object (tests/install/compare.sh drops exactly these). */}}
{{- define "ato.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
{{- end -}}

{{/* The label the operator's pods are selected by. */}}
{{- define "ato.selector" -}}
app.kubernetes.io/name: access-token-operator
{{- end -}}

{{/* Both labels: objects that belong to the operator's pods. */}}
{{- define "ato.labels" -}}
{{ include "ato.selector" . }}
{{ include "ato.helmLabels" . }}
{{- end -}}

{{/* The operator's ServiceAccount as kube-apiserver names it (admission policies). */}}
{{- define "ato.username" -}}
{{ printf "system:serviceaccount:%s:%s" .Release.Namespace .Values.serviceAccount.name }}
{{- end -}}

{{- define "ato.leaderElection" -}}
{{- if kindIs "invalid" .Values.leaderElection -}}
{{ gt (int .Values.replicaCount) 1 }}
{{- else -}}
{{ .Values.leaderElection }}
{{- end -}}
{{- end -}}

{{/* Where listeners bind: the pod's own address on the host network (two replicas on
     nodes that share one network must not collide), else every address. */}}
{{- define "ato.bindHost" -}}
{{ ternary "$(POD_IP)" "0.0.0.0" .Values.hostNetwork }}
{{- end -}}

{{/* The operator's rights in the namespace it watches (watchNamespace). */}}
{{- define "ato.namespacedRules" }}
  - apiGroups: [iam.accesstoken.io]
    resources: [accesstokens]
    verbs: [get, list, watch, patch]
  - apiGroups: [iam.accesstoken.io]
    resources: [accesstokens/status]
    verbs: [patch]
  - apiGroups: [iam.accesstoken.io]
    resources: [accesstokens/finalizers]
    verbs: [update]
  - apiGroups: [iam.accesstoken.io]
    resources: [technicalusers]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch, create, update, delete]
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [apps]
    resources: [deployments, statefulsets, daemonsets]
    verbs: [get, patch]
{{- end }}
