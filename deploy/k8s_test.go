package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// manifests is the kustomize base built by kustomize itself (the library
// behind `kubectl kustomize`), each object decoded strictly into its
// Kubernetes API type: an unknown or misspelt field fails.
type manifests struct {
	deployments map[string]appsv1.Deployment
	services    map[string]corev1.Service
	pdbs        map[string]policyv1.PodDisruptionBudget
	hpas        map[string]autoscalingv2.HorizontalPodAutoscaler
	configMaps  map[string]corev1.ConfigMap
}

func buildBase(t *testing.T) manifests {
	t.Helper()
	dir := filepath.Join(root(t), "deploy", "k8s", "base")
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/base: %v", err)
	}
	m := manifests{
		deployments: map[string]appsv1.Deployment{},
		services:    map[string]corev1.Service{},
		pdbs:        map[string]policyv1.PodDisruptionBudget{},
		hpas:        map[string]autoscalingv2.HorizontalPodAutoscaler{},
		configMaps:  map[string]corev1.ConfigMap{},
	}
	for _, r := range res.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind, name := r.GetKind(), r.GetName()
		decode := func(v any) {
			if err := yaml.UnmarshalStrict(b, v); err != nil {
				t.Errorf("%s %s: %v", kind, name, err)
			}
		}
		if part := r.GetLabels()["app.kubernetes.io/part-of"]; part != "rcm" {
			t.Errorf("%s %s: label app.kubernetes.io/part-of %q", kind, name, part)
		}
		switch r.GetApiVersion() + " " + kind {
		case "apps/v1 Deployment":
			var d appsv1.Deployment
			decode(&d)
			m.deployments[name] = d
		case "v1 Service":
			var s corev1.Service
			decode(&s)
			m.services[name] = s
		case "policy/v1 PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			decode(&p)
			m.pdbs[name] = p
		case "autoscaling/v2 HorizontalPodAutoscaler":
			var h autoscalingv2.HorizontalPodAutoscaler
			decode(&h)
			m.hpas[name] = h
		case "v1 ConfigMap":
			var c corev1.ConfigMap
			decode(&c)
			m.configMaps[name] = c
		default:
			t.Errorf("unexpected %s %s %s", r.GetApiVersion(), kind, name)
		}
	}
	return m
}

// kustomization.yaml names files that exist, and every manifest file is
// named (nothing lies around unused).
func TestKustomizationFiles(t *testing.T) {
	dir := filepath.Join(root(t), "deploy", "k8s", "base")
	var k struct {
		Resources          []string `json:"resources"`
		ConfigMapGenerator []struct {
			Envs []string `json:"envs"`
		} `json:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy", "k8s", "base", "kustomization.yaml"), &k); err != nil {
		t.Fatal(err)
	}
	listed := slices.Clone(k.Resources)
	for _, g := range k.ConfigMapGenerator {
		listed = append(listed, g.Envs...)
	}
	for _, f := range listed {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("kustomization.yaml names %s: %v", f, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "kustomization.yaml" && !slices.Contains(listed, e.Name()) {
			t.Errorf("%s is not in kustomization.yaml", e.Name())
		}
	}
}

func TestKubernetesBase(t *testing.T) {
	m := buildBase(t)
	if len(m.configMaps) != 1 {
		t.Fatalf("config maps %d, want rcm-config only", len(m.configMaps))
	}
	var config corev1.ConfigMap
	for name, c := range m.configMaps {
		if !strings.HasPrefix(name, "rcm-config-") {
			t.Errorf("config map %s: want the generated rcm-config", name)
		}
		config = c
	}
	if got := config.Data["RCM_KAFKA_CREATE_TOPICS"]; got != "false" {
		t.Errorf("RCM_KAFKA_CREATE_TOPICS %q: topics are created with their settings ahead of the services", got)
	}
	for _, svc := range services[1:] {
		key := "RCM_" + strings.ToUpper(svc.name) + "_URL"
		if got, want := config.Data[key], fmt.Sprintf("http://%s:%d", svc.name, svc.port); got != want {
			t.Errorf("%s %q, want %q (the Service)", key, got, want)
		}
	}

	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			d, ok := m.deployments[svc.name]
			if !ok {
				t.Fatal("no Deployment")
			}
			checkDeployment(t, svc.name, svc.port, d, config.Name)
			pods := labels.Set(d.Spec.Template.Labels)

			s, ok := m.services[svc.name]
			if !ok {
				t.Fatal("no Service")
			}
			if !labels.SelectorFromSet(s.Spec.Selector).Matches(pods) || len(s.Spec.Selector) == 0 {
				t.Errorf("Service selector %v does not select the pods %v", s.Spec.Selector, pods)
			}
			if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != int32(svc.port) || s.Spec.Ports[0].TargetPort.String() != "http" {
				t.Errorf("Service ports %+v, want %d to http", s.Spec.Ports, svc.port)
			}

			p, ok := m.pdbs[svc.name]
			if !ok {
				t.Fatal("no PodDisruptionBudget")
			}
			sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err != nil || !sel.Matches(pods) {
				t.Errorf("PodDisruptionBudget selector does not select the pods: %v", err)
			}
			if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
				t.Error("PodDisruptionBudget allows any disruption")
			}

			h, scaled := m.hpas[svc.name]
			switch svc.name {
			case "gateway", "campaign":
				if !scaled {
					t.Fatal("stateless, but no HorizontalPodAutoscaler")
				}
				if ref := h.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != svc.name || ref.APIVersion != "apps/v1" {
					t.Errorf("HPA targets %+v", ref)
				}
				if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
					t.Errorf("HPA replicas %s..%d: want at least 2", fmtReplicas(h.Spec.MinReplicas), h.Spec.MaxReplicas)
				}
				if d.Spec.Replicas != nil {
					t.Errorf("Deployment sets replicas %d, which every apply would reset under the HPA", *d.Spec.Replicas)
				}
			default:
				if scaled {
					t.Error("scales with the topic's partitions, yet has an HPA")
				}
				partitions := topics["rcm.campaign-events.v1"]
				if r := d.Spec.Replicas; r == nil || *r < 1 || int(*r) > partitions {
					t.Errorf("replicas %s: want 1..%d (the partitions of rcm.campaign-events.v1)", fmtReplicas(r), partitions)
				}
				if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
					t.Error("a rollout may run more consumers than replicas: want maxSurge 0")
				}
			}
		})
	}
}

func checkDeployment(t *testing.T, name string, port int, d appsv1.Deployment, configMap string) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector does not select the pod template: %v", err)
	}
	spec := d.Spec.Template.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("mounts a service account token it has no use for")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != "rcm/"+name {
		t.Errorf("image %q, want rcm/%s (overlays set registry and tag)", c.Image, name)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != int32(port) {
		t.Errorf("ports %+v, want http %d", c.Ports, port)
	}
	for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "http" {
			t.Errorf("probe %+v: want GET %s on http", probe, want)
		}
	}
	if rp := c.ReadinessProbe; rp != nil && rp.TimeoutSeconds <= 2 {
		t.Errorf("readiness timeout %ds: /readyz waits up to 2s for its checks", rp.TimeoutSeconds)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		if !okReq || !okLim {
			t.Errorf("%s: request %v limit %v: want both", r, req, lim)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("%s request %s above its limit %s", r, req.String(), lim.String())
		}
	}
	csc := c.SecurityContext
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v: want no privilege escalation, a read-only root and no capabilities", csc)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != configMap {
		t.Errorf("envFrom %+v: want the ConfigMap %s", c.EnvFrom, configMap)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if got := env["RCM_HTTP_ADDR"].Value; got != fmt.Sprintf(":%d", port) {
		t.Errorf("RCM_HTTP_ADDR %q", got)
	}
	secretRef := func(key string) string {
		if e, ok := env[key]; ok && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "rcm-secrets" {
			return e.ValueFrom.SecretKeyRef.Key
		}
		return ""
	}
	if secretRef("RCM_INTERNAL_SECRET") != "internal-secret" {
		t.Error("RCM_INTERNAL_SECRET does not come from rcm-secrets/internal-secret")
	}
	if name != "gateway" && secretRef("RCM_MONGODB_URI") != name+"-mongodb-uri" {
		t.Errorf("RCM_MONGODB_URI does not come from rcm-secrets/%s-mongodb-uri", name)
	}
	if name == "compliance" && env["RCM_MONGODB_CREATE_INDEXES"].Value != "false" {
		t.Error("compliance creates indexes, which its MongoDB role does not allow")
	}
	if v := env["GOMEMLIMIT"].Value; v != "" {
		soft, err := resource.ParseQuantity(strings.TrimSuffix(v, "B"))
		lim := c.Resources.Limits[corev1.ResourceMemory]
		if err != nil || soft.Cmp(lim) >= 0 {
			t.Errorf("GOMEMLIMIT %s: want below the memory limit %s (%v)", v, lim.String(), err)
		}
	}
}

func fmtReplicas(r *int32) string {
	if r == nil {
		return "unset"
	}
	return fmt.Sprint(*r)
}
