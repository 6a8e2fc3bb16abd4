package main

import (
	"strings"
	"testing"
)

// A Deployment that passes, with its Service; each test breaks one thing of it.
const goodDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 2
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: main
          image: example/app:1
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: data, mountPath: /data}
      volumes:
        - {name: data, emptyDir: {}}
`

const goodService = `
---
apiVersion: v1
kind: Service
metadata:
  name: app
  labels: {app: x}
spec:
  selector: {app: x}
  ports:
    - {name: http, port: 80}
`

func problems(t *testing.T, manifests string) string {
	t.Helper()
	objects, err := Decode(strings.NewReader(manifests))
	if err != nil {
		return err.Error()
	}
	return strings.Join(Check(objects), "\n")
}

func TestAGoodDeploymentPasses(t *testing.T) {
	// A comment-only document, as a disabled template renders, is skipped.
	if p := problems(t, goodDeployment+goodService+"\n---\n# Source: off.yaml\n"); p != "" {
		t.Fatalf("unexpected problems: %s", p)
	}
}

func TestEachBreakageIsReported(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown field", "replicas: 2", "replicas: 2\n  replica: 2", `unknown field "spec.replica"`},
		{"field in the wrong case", "replicas: 2", "Replicas: 2", `unknown field "spec.Replicas"`},
		{"duplicate field", "replicas: 2", "replicas: 2\n  replicas: 3", `key "replicas" already set`},
		{"no seccomp profile", "seccompProfile: {type: RuntimeDefault}", "fsGroup: 1", "seccompProfile"},
		{"privilege escalation", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation"},
		{"capabilities kept", "drop: [ALL]", "drop: [NET_RAW]", "capabilities"},
		{"root allowed", "runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot"},
		{"writable root filesystem", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"},
		{"mount without volume", "{name: data, emptyDir: {}}", "{name: other, emptyDir: {}}", `mounts volume "data"`},
		{"selector not matching", "matchLabels: {app: x}", "matchLabels: {app: z}", "does not select its pod template"},
		{"unknown kind", "kind: Deployment", "kind: StatefulSet", `kind "StatefulSet" is not one`},
		{"old api version", "apiVersion: apps/v1", "apiVersion: apps/v1beta2", `apiVersion "apps/v1beta2"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			broken := strings.Replace(goodDeployment, c.from, c.to, 1)
			if broken == goodDeployment {
				t.Fatalf("%q not in the manifest", c.from)
			}
			if p := problems(t, broken+goodService); !strings.Contains(p, c.want) {
				t.Fatalf("want a problem containing %q, got: %q", c.want, p)
			}
		})
	}
}

func TestAnInitContainerIsHeldToTheSameRules(t *testing.T) {
	broken := strings.Replace(goodDeployment, "      containers:", `      initContainers:
        - name: init
          image: busybox
      containers:`, 1)
	p := problems(t, broken+goodService)
	for _, want := range []string{"restricted", `container "init": securityContext.readOnlyRootFilesystem`} {
		if !strings.Contains(p, want) {
			t.Errorf("want %q in: %s", want, p)
		}
	}
}

func TestAnAutoscaledDeploymentLeavesReplicasToTheHPA(t *testing.T) {
	hpa := `
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: app}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  maxReplicas: 3
`
	if p := problems(t, goodDeployment+goodService+hpa); !strings.Contains(p, "sets replicas although HorizontalPodAutoscaler/app") {
		t.Fatalf("got: %q", p)
	}
	unowned := strings.Replace(goodDeployment, "  replicas: 2\n", "", 1)
	if p := problems(t, unowned+goodService+hpa); p != "" {
		t.Fatalf("unexpected problems: %s", p)
	}
	other := strings.Replace(hpa, "kind: Deployment, name: app}", "kind: Deployment, name: gone}", 1)
	if p := problems(t, unowned+goodService+other); !strings.Contains(p, "Deployment/gone, which is not rendered") {
		t.Fatalf("got: %q", p)
	}
}

func TestCustomResourcesDecodeStrictlyAndReferToTheService(t *testing.T) {
	monitor := `
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: app}
spec:
  selector: {matchLabels: {app: x}}
  endpoints: [{port: http, path: /metrics}]
`
	rule := `
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: app}
spec:
  groups:
    - name: g
      rules:
        - {alert: Down, expr: up == 0, for: 5m, labels: {severity: critical}}
`
	if p := problems(t, goodDeployment+goodService+monitor+rule); p != "" {
		t.Fatalf("unexpected problems: %s", p)
	}
	cases := []struct{ name, manifests, want string }{
		{"unknown monitor field", strings.Replace(monitor, "path: /metrics", "pathh: /metrics", 1), `unknown field "spec.endpoints[0].pathh"`},
		{"monitor on a missing port", strings.Replace(monitor, "port: http", "port: metrics", 1), `no port named "metrics"`},
		{"monitor selecting nothing", strings.Replace(monitor, "{app: x}", "{app: z}", 1), "selects no rendered Service"},
		{"unknown rule field", strings.Replace(rule, "for: 5m", "fore: 5m", 1), `unknown field "spec.groups[0].rules[0].fore"`},
		{"rule without expr", strings.Replace(rule, "expr: up == 0, ", "", 1), "needs an expr"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if p := problems(t, goodDeployment+goodService+c.manifests); !strings.Contains(p, c.want) {
				t.Fatalf("want a problem containing %q, got: %q", c.want, p)
			}
		})
	}
}

func TestAServiceMustSelectThePods(t *testing.T) {
	svc := strings.Replace(goodService, "selector: {app: x}", "selector: {app: z}", 1)
	if p := problems(t, goodDeployment+svc); !strings.Contains(p, "Service/app selects no rendered pod") {
		t.Fatalf("got: %q", p)
	}
}
