{{/* The name every object of the release starts with. */}}
{{- define "agent-mesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agent-mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "agent-mesh.labels" -}}
{{ include "agent-mesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: agent-mesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "agent-mesh.serviceAccountName" -}}
{{- default (include "agent-mesh.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "agent-mesh.webhookConfiguration" -}}
{{- default (printf "%s.%s.agentmesh.io" (include "agent-mesh.fullname" .) .Release.Namespace) .Values.webhook.configurationName -}}
{{- end -}}

{{- define "agent-mesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret cert-manager writes the serving certificate into. */}}
{{- define "agent-mesh.tlsSecret" -}}
{{- printf "%s-tls" (include "agent-mesh.fullname" .) -}}
{{- end -}}

{{/* Every DNS name clients reach the operator by, besides the mesh Service's own. */}}
{{- define "agent-mesh.extraNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list -}}
{{- range $svc := list (printf "%s-webhook" (include "agent-mesh.fullname" .)) (printf "%s-metrics" (include "agent-mesh.fullname" .)) -}}
{{- $names = append $names $svc -}}
{{- $names = append $names (printf "%s.%s" $svc $ns) -}}
{{- $names = append $names (printf "%s.%s.svc" $svc $ns) -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{- /* What the operator does in a namespace it watches (docs/helm.md lists each rule
       with the code that needs it). */}}
{{- define "agent-mesh.watchedRules" }}
  # kopf watches the three kinds and keeps its bookkeeping in their annotations
  - apiGroups: ["agentmesh.io"]
    resources: ["meshagents", "meshtasks", "aclpolicies"]
    verbs: ["get", "list", "watch", "patch"]
  # the fast path's durable tasks; finished tasks past ttlSecondsAfterFinished
  - apiGroups: ["agentmesh.io"]
    resources: ["meshtasks"]
    verbs: ["create", "delete"]
  # the operator writes status only
  - apiGroups: ["agentmesh.io"]
    resources: ["meshagents/status", "meshtasks/status", "aclpolicies/status"]
    verbs: ["patch"]
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create", "patch"]
  # token exchange: the pod a projected ServiceAccount token is bound to
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get"]
  # external agents' credential Secrets (<agent>-mesh-credential)
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["create", "get", "update"]
  # the CA bundle agents verify the mesh API with
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["create"]
  - apiGroups: [""]
    resources: ["configmaps"]
    resourceNames: ["agent-mesh-ca.crt"]
    verbs: ["get", "update"]
  # managed agents (spec.workload): their StatefulSet, headless Service, ServiceAccount,
  # serve ConfigMap, Role and RoleBinding, applied server-side (a create when missing),
  # watched so that a deleted one is put back, and the tailnet ones removed when an agent
  # leaves the tailnet
  - apiGroups: ["apps"]
    resources: ["statefulsets"]
    verbs: ["list", "watch", "create", "patch"]
  - apiGroups: [""]
    resources: ["services", "serviceaccounts"]
    verbs: ["list", "watch", "create", "patch"]
  - apiGroups: [""]
    resources: ["secrets", "configmaps"]
    verbs: ["list", "watch", "patch", "deletecollection"]
  # a tailscale agent's device read into status: its pod's sidecar health
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list", "watch"]
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["roles", "rolebindings"]
    verbs: ["list", "watch", "create", "patch", "deletecollection"]
  # a Role may grant only what its creator holds: the sidecar's Role grants get, update and
  # patch on its state Secret and get, create and patch on Events
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["get"]
{{- end }}

{{/* The tailscale image: repository:tag, or repository@sha256:... for a digest. */}}
{{- define "agent-mesh.tailscaleImage" -}}
{{- $image := .Values.tailscale.image -}}
{{- printf "%s%s%s" $image.repository (ternary "@" ":" (hasPrefix "sha256:" $image.tag)) $image.tag -}}
{{- end -}}

{{/* The Secret the operator's tailscaled keeps its device's state in (TS_KUBE_SECRET). */}}
{{- define "agent-mesh.tailscaleStateSecret" -}}
{{- default (printf "%s-tailscale" (include "agent-mesh.fullname" .)) .Values.tailscale.stateSecret -}}
{{- end -}}

{{/* The operator's device name: never agent-mesh-*, the agents' names. */}}
{{- define "agent-mesh.tailscaleHostname" -}}
{{- if hasPrefix "agent-mesh-" .Values.tailscale.hostname -}}
{{- fail (printf "tailscale.hostname %q: must not start with agent-mesh- (the tailnet names of agents, agent-mesh-<namespace>-<agentId>); leave it empty for mesh-operator-<namespace>" .Values.tailscale.hostname) -}}
{{- end -}}
{{- default (printf "mesh-operator-%s" .Release.Namespace | trunc 63 | trimSuffix "-") .Values.tailscale.hostname -}}
{{- end -}}

{{/* host:port of the sidecar's outbound HTTP proxy, on loopback only. */}}
{{- define "agent-mesh.tailnetProxy" -}}
{{- printf "127.0.0.1:%d" (int .Values.tailscale.proxyPort) -}}
{{- end -}}
