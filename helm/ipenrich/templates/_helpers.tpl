{{- define "ipenrich.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ipenrich.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ipenrich.labels" -}}
app.kubernetes.io/name: {{ include "ipenrich.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ipenrich.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ipenrich.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The ServiceAccount the pods run as: the created one, or an existing one (or "default"). */}}
{{- define "ipenrich.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ipenrich.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ipenrich.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Where the image keeps its demo database (scripts/image.sh copies samples/demo-asn.mmdb there). */}}
{{- define "ipenrich.demoMmdbPath" -}}
/usr/share/ipenrich/demo-asn.mmdb
{{- end -}}

{{/* The mmdb sources that download the database with `ipenrich mmdb fetch`. */}}
{{- define "ipenrich.mmdbFetches" -}}
{{- if has .Values.mmdb.source (list "openipapi" "geolite2") -}}true{{- end -}}
{{- end -}}

{{/*
The file name of the database under mmdb.mountPath: mmdb.file when set, else what the
source names it. An existing claim holds a file only the user knows, so it must be named.
*/}}
{{- define "ipenrich.mmdbFile" -}}
{{- $m := .Values.mmdb -}}
{{- if $m.file -}}
{{- $m.file -}}
{{- else if eq $m.source "openipapi" -}}
{{- printf "openipapi-%s.mmdb" $m.openipapi.edition -}}
{{- else if eq $m.source "geolite2" -}}
{{- printf "%s.mmdb" $m.geolite2.edition -}}
{{- else if eq $m.source "configMap" -}}
{{- $m.configMap.key -}}
{{- else if eq $m.source "existingClaim" -}}
{{- fail "mmdb.file is required with mmdb.source=existingClaim: the name of the .mmdb file in the claim" -}}
{{- end -}}
{{- end -}}

{{/*
The path of the database the pipelines read, following mmdb.source. Use it in
values.config as `path: '{{ include "ipenrich.mmdbPath" . }}'`.
*/}}
{{- define "ipenrich.mmdbPath" -}}
{{- if eq .Values.mmdb.source "demo" -}}
{{- include "ipenrich.demoMmdbPath" . -}}
{{- else -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.mmdb.mountPath) (include "ipenrich.mmdbFile" .) -}}
{{- end -}}
{{- end -}}

{{/* The volume behind mmdb.mountPath; empty for the demo source, which reads the image. */}}
{{- define "ipenrich.mmdbVolume" -}}
{{- $m := .Values.mmdb -}}
{{- if eq $m.source "configMap" }}
- name: mmdb
  configMap:
    name: {{ required "mmdb.configMap.name is required with mmdb.source=configMap" $m.configMap.name }}
{{- else if eq $m.source "existingClaim" }}
- name: mmdb
  persistentVolumeClaim:
    claimName: {{ required "mmdb.persistence.existingClaim is required with mmdb.source=existingClaim" $m.persistence.existingClaim }}
    readOnly: true
{{- else if include "ipenrich.mmdbFetches" . }}
- name: mmdb
  {{- if $m.persistence.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $m.persistence.existingClaim }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: mmdb-tmp
  emptyDir: {}
{{- end }}
{{- end -}}

{{/*
The `ipenrich mmdb fetch` container (openipapi, geolite2); the init container when
called with every="" and the refresh sidecar with every=<interval>.
Argument: (dict "root" $ "name" <container name> "every" <interval or "">).
*/}}
{{- define "ipenrich.mmdbFetcher" -}}
{{- $ := .root -}}
{{- $m := $.Values.mmdb -}}
{{- $args := list "mmdb" "fetch" "--source" $m.source -}}
{{- $src := ternary $m.openipapi $m.geolite2 (eq $m.source "openipapi") -}}
{{- $args = concat $args (list "--edition" $src.edition "--out" (include "ipenrich.mmdbPath" $)) -}}
{{- with $src.url }}{{ $args = concat $args (list "--url" .) }}{{ end -}}
{{- with .every }}{{ $args = concat $args (list "--every" .) }}{{ end -}}
- name: {{ .name }}
  image: {{ include "ipenrich.image" $ | quote }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args: {{ toJson $args }}
  env:
    - name: IPENRICH_LOG_FORMAT
      value: {{ $.Values.logFormat | quote }}
    - name: RUST_LOG
      value: {{ $.Values.logLevel | quote }}
    {{- if eq $m.source "openipapi" }}
    - name: OPENIPAPI_API_KEY
      valueFrom:
        secretKeyRef:
          name: {{ required "mmdb.openipapi.existingSecret is required with mmdb.source=openipapi" $m.openipapi.existingSecret }}
          key: {{ $m.openipapi.secretKey }}
    {{- else }}
    - name: MAXMIND_ACCOUNT_ID
      valueFrom:
        secretKeyRef:
          name: {{ required "mmdb.geolite2.existingSecret is required with mmdb.source=geolite2" $m.geolite2.existingSecret }}
          key: {{ $m.geolite2.accountIdKey }}
    - name: MAXMIND_LICENSE_KEY
      valueFrom:
        secretKeyRef:
          name: {{ $m.geolite2.existingSecret }}
          key: {{ $m.geolite2.licenseKeyKey }}
    {{- end }}
  securityContext:
    {{- toYaml $.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $m.fetcher.resources | nindent 4 }}
  volumeMounts:
    - name: mmdb
      mountPath: {{ $m.mountPath }}
    # The root filesystem is read-only; a fetcher that stages its download in /tmp
    # gets a writable one.
    - name: mmdb-tmp
      mountPath: /tmp
{{- end -}}
