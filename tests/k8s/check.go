// Package main checks rendered Helm manifests the way an API server with Pod Security
// "restricted" would, without a cluster: every document decodes strictly (an unknown or
// duplicate field is an error, as in `kubectl apply --validate=strict`) into the
// k8s.io/api type of its apiVersion and kind, every pod template passes the
// pod-security-admission evaluator at level restricted, and the objects fit together
// (mounts name volumes, selectors select the pods, the HPA owns the replica count).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// ServiceMonitor is the part of the Prometheus Operator CRD the chart writes; a field
// the chart renders and this struct lacks is an error, so it stays in step.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path,omitempty"`
			Interval string `json:"interval,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// PrometheusRule is the part of the Prometheus Operator CRD the chart writes.
type PrometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name     string `json:"name"`
			Interval string `json:"interval,omitempty"`
			Rules    []struct {
				Alert       string            `json:"alert,omitempty"`
				Record      string            `json:"record,omitempty"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels,omitempty"`
				Annotations map[string]string `json:"annotations,omitempty"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// kinds maps "apiVersion kind" to a fresh object of the type it decodes into. A
// document of any other apiVersion and kind is an error.
var kinds = map[string]func() any{
	"apps/v1 Deployment":                      func() any { return &appsv1.Deployment{} },
	"v1 Service":                              func() any { return &corev1.Service{} },
	"v1 ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1 ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1 PersistentVolumeClaim":                func() any { return &corev1.PersistentVolumeClaim{} },
	"policy/v1 PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2 HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"monitoring.coreos.com/v1 ServiceMonitor": func() any { return &ServiceMonitor{} },
	"monitoring.coreos.com/v1 PrometheusRule": func() any { return &PrometheusRule{} },
}

// Object is one decoded document.
type Object struct {
	Kind string
	Name string
	Obj  any
}

// Decode splits a multi-document YAML stream and decodes every non-empty document
// strictly into the type of its apiVersion and kind.
func Decode(r io.Reader) ([]Object, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objects []Object
	var problems []string
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		obj, err := decodeOne(doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("document %d: %v", i, err))
			continue
		}
		if obj != nil {
			objects = append(objects, *obj)
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return objects, nil
}

func decodeOne(doc []byte) (*Object, error) {
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		return nil, nil // only comments, e.g. a disabled template
	}
	var meta struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &meta); err != nil {
		return nil, err
	}
	key := meta.APIVersion + " " + meta.Kind
	newObj, ok := kinds[key]
	if !ok {
		return nil, fmt.Errorf("%s/%s: apiVersion %q kind %q is not one this chart may render", meta.Kind, meta.Metadata.Name, meta.APIVersion, meta.Kind)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(data, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", meta.Kind, meta.Metadata.Name, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s/%s: %s", meta.Kind, meta.Metadata.Name, strings.Join(msgs, "; "))
	}
	if meta.Metadata.Name == "" {
		return nil, fmt.Errorf("%s without metadata.name", meta.Kind)
	}
	return &Object{Kind: meta.Kind, Name: meta.Metadata.Name, Obj: obj}, nil
}

// Check runs every check on the decoded objects and returns one line per problem.
func Check(objects []Object) []string {
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return []string{fmt.Sprintf("pod security evaluator: %v", err)}
	}
	var problems []string
	for _, o := range objects {
		if d, ok := o.Obj.(*appsv1.Deployment); ok {
			for _, p := range checkPod(evaluator, &d.Spec.Template) {
				problems = append(problems, fmt.Sprintf("Deployment/%s: %s", d.Name, p))
			}
			problems = append(problems, checkDeployment(d, objects)...)
		}
	}
	problems = append(problems, checkReferences(objects)...)
	return problems
}

// checkPod evaluates a pod template at Pod Security "restricted" (latest version), and
// checks what the level does not: a read-only root filesystem for every container,
// unique container and volume names, and a volume for every mount.
func checkPod(evaluator policy.Evaluator, t *corev1.PodTemplateSpec) []string {
	var problems []string
	level := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	result := policy.AggregateCheckResults(evaluator.EvaluatePod(level, &t.ObjectMeta, &t.Spec))
	if !result.Allowed {
		problems = append(problems, "violates PodSecurity \"restricted:latest\": "+result.ForbiddenDetail())
	}
	volumes := map[string]bool{}
	for _, v := range t.Spec.Volumes {
		if volumes[v.Name] {
			problems = append(problems, fmt.Sprintf("volume %q defined twice", v.Name))
		}
		volumes[v.Name] = true
	}
	containers := map[string]bool{}
	all := append(append([]corev1.Container{}, t.Spec.InitContainers...), t.Spec.Containers...)
	for _, c := range all {
		if containers[c.Name] {
			problems = append(problems, fmt.Sprintf("container %q defined twice", c.Name))
		}
		containers[c.Name] = true
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			problems = append(problems, fmt.Sprintf("container %q: securityContext.readOnlyRootFilesystem must be true", c.Name))
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				problems = append(problems, fmt.Sprintf("container %q mounts volume %q, which the pod does not define", c.Name, m.Name))
			}
		}
	}
	if len(t.Spec.Containers) == 0 {
		problems = append(problems, "no containers")
	}
	return problems
}

// checkDeployment: the selector selects the pod template, and an HPA that scales the
// Deployment is the only owner of its replica count.
func checkDeployment(d *appsv1.Deployment, objects []Object) []string {
	var problems []string
	if !selects(d.Spec.Selector, d.Spec.Template.Labels) {
		problems = append(problems, fmt.Sprintf("Deployment/%s: spec.selector does not select its pod template", d.Name))
	}
	for _, o := range objects {
		hpa, ok := o.Obj.(*autoscalingv2.HorizontalPodAutoscaler)
		if ok && hpa.Spec.ScaleTargetRef.Kind == "Deployment" && hpa.Spec.ScaleTargetRef.Name == d.Name && d.Spec.Replicas != nil {
			problems = append(problems, fmt.Sprintf("Deployment/%s: sets replicas although HorizontalPodAutoscaler/%s scales it", d.Name, hpa.Name))
		}
	}
	return problems
}

// checkReferences: what one object names in another exists among the rendered ones.
func checkReferences(objects []Object) []string {
	var problems []string
	var podLabels []map[string]string
	deployments := map[string]bool{}
	var services []*corev1.Service
	for _, o := range objects {
		switch obj := o.Obj.(type) {
		case *appsv1.Deployment:
			deployments[obj.Name] = true
			podLabels = append(podLabels, obj.Spec.Template.Labels)
		case *corev1.Service:
			services = append(services, obj)
		}
	}
	selectsAPod := func(s *metav1.LabelSelector) bool {
		for _, l := range podLabels {
			if selects(s, l) {
				return true
			}
		}
		return false
	}
	for _, o := range objects {
		switch obj := o.Obj.(type) {
		case *corev1.Service:
			if !selectsAPod(&metav1.LabelSelector{MatchLabels: obj.Spec.Selector}) {
				problems = append(problems, fmt.Sprintf("Service/%s selects no rendered pod", obj.Name))
			}
		case *policyv1.PodDisruptionBudget:
			if !selectsAPod(obj.Spec.Selector) {
				problems = append(problems, fmt.Sprintf("PodDisruptionBudget/%s selects no rendered pod", obj.Name))
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			if ref := obj.Spec.ScaleTargetRef; ref.Kind != "Deployment" || !deployments[ref.Name] {
				problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler/%s scales %s/%s, which is not rendered", obj.Name, ref.Kind, ref.Name))
			}
		case *ServiceMonitor:
			problems = append(problems, checkServiceMonitor(obj, services)...)
		case *PrometheusRule:
			problems = append(problems, checkRules(obj)...)
		}
	}
	return problems
}

func checkServiceMonitor(sm *ServiceMonitor, services []*corev1.Service) []string {
	for _, s := range services {
		if !selects(&sm.Spec.Selector, s.Labels) {
			continue
		}
		var problems []string
		for _, e := range sm.Spec.Endpoints {
			found := false
			for _, p := range s.Spec.Ports {
				found = found || p.Name == e.Port
			}
			if !found {
				problems = append(problems, fmt.Sprintf("ServiceMonitor/%s: Service/%s has no port named %q", sm.Name, s.Name, e.Port))
			}
		}
		return problems
	}
	return []string{fmt.Sprintf("ServiceMonitor/%s selects no rendered Service", sm.Name)}
}

func checkRules(r *PrometheusRule) []string {
	var problems []string
	if len(r.Spec.Groups) == 0 {
		problems = append(problems, fmt.Sprintf("PrometheusRule/%s has no groups", r.Name))
	}
	for _, g := range r.Spec.Groups {
		for i, rule := range g.Rules {
			if strings.TrimSpace(rule.Expr) == "" || (rule.Alert == "") == (rule.Record == "") {
				problems = append(problems, fmt.Sprintf("PrometheusRule/%s group %s rule %d: needs an expr and exactly one of alert, record", r.Name, g.Name, i))
			}
		}
	}
	return problems
}

// selects reports whether a non-empty selector matches the labels.
func selects(s *metav1.LabelSelector, l map[string]string) bool {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	return err == nil && sel.Matches(labels.Set(l))
}
