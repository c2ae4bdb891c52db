{{/* The proxy (`access-token-operator proxy`) and what the operator does for it: see
     docs/installation/proxy.md. Kept apart from the operator's templates. */}}

{{/* The label the proxy's pods are selected by (not the operator's: its Service and PDB
     must not select them). */}}
{{- define "ato.proxy.selector" -}}
app.kubernetes.io/name: access-token-proxy
{{- end -}}

{{- define "ato.proxy.labels" -}}
{{ include "ato.proxy.selector" . }}
{{ include "ato.helmLabels" . }}
{{- end -}}

{{/* The name of impersonation shard N (the operator's impersonation::shard_name). */}}
{{- define "ato.proxy.shardName" -}}
{{ printf "access-token-operator-proxy-impersonate-%02d" (int .) }}
{{- end -}}

{{/* Where token Secrets' kubeconfig points: kubeconfig.server, else the proxy's Service. */}}
{{- define "ato.kubeconfigServer" -}}
{{- if .Values.kubeconfig.server -}}
{{ .Values.kubeconfig.server }}
{{- else if .Values.proxy.enabled -}}
{{ printf "https://access-token-proxy.%s.svc:%d" .Release.Namespace (int .Values.proxy.service.port) }}
{{- end -}}
{{- end -}}

{{/* Whether the operator reads the kubeconfig CA from the proxy's TLS Secret (its ca.crt). */}}
{{- define "ato.proxy.operatorMountsCA" -}}
{{- if and .Values.proxy.enabled (not .Values.kubeconfig.caData) (not .Values.kubeconfig.systemRoots) -}}
true
{{- end -}}
{{- end -}}

{{/* The operator's flags for the proxy: impersonation shards and the kubeconfig endpoint. */}}
{{- define "ato.proxy.operatorArgs" -}}
{{- if .Values.proxy.enabled }}
- --impersonation-role-shards={{ .Values.proxy.impersonationShards }}
{{- end }}
{{- with include "ato.kubeconfigServer" . }}
- --kubeconfig-server={{ . }}
{{- if $.Values.kubeconfig.caData }}
- --kubeconfig-ca-data={{ $.Values.kubeconfig.caData }}
{{- else if include "ato.proxy.operatorMountsCA" $ }}
- --kubeconfig-ca-file=/proxy-ca/ca.crt
{{- end }}
{{- end }}
{{- end -}}
