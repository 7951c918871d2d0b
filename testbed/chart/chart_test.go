// Package chart tests the Helm chart in deploy/helm/shoal: helm lint and
// helm template of the defaults and of every ci/*-values.yaml; every
// rendered object decodes strictly into its Kubernetes API type; and every
// container's command runs against the shoal binary, inside a copy of the
// pod's filesystem built from the rendered ConfigMaps and Secrets (roles
// load their config strictly with --print-config; node-setup really writes
// into a scratch host root).
package chart

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "../../deploy/helm/shoal"
	// helmDir is where .ci/run installs helm (go install); SHOAL_HELM
	// names another helm binary.
	helmDir     = "/usr/local/lib/shoal-ci/helm/bin"
	kubeVersion = "1.31.0"
	namespace   = "shoal"
)

// Secrets the ci values put in values: none may reach a ConfigMap or --print-config.
var secretValues = []string{"hub-secret", "ghcr-secret", "admin-secret"}

func helmBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SHOAL_HELM"); p != "" {
		return p
	}
	if p := filepath.Join(helmDir, "helm"); isExec(p) {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Skipf("SKIP: helm is not installed (%s/helm, PATH or $SHOAL_HELM): .ci/run installs it with go install helm.sh/helm/v3/cmd/helm", helmDir)
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

// shoalBin builds the shoal binary once per test run.
func shoalBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shoal")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/shoal")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build shoal: %v\n%s", err, out)
	}
	return bin
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// object is one rendered manifest: its kind, name and JSON.
type object struct {
	Kind, Name string
	JSON       []byte
}

func (o object) String() string { return o.Kind + "/" + o.Name }

func TestChart(t *testing.T) {
	helm := helmBin(t)
	bin := shoalBin(t)
	knowsTLS := knowsKey(t, bin, "[tls]\nmtls = false\n")
	if !knowsTLS {
		t.Log("this shoal binary has no [tls] key yet: configs with TLS on are rendered and decoded, not loaded")
	}
	valueFiles, _ := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	sets := append([]string{""}, valueFiles...)
	for _, vf := range sets {
		name := "defaults"
		if vf != "" {
			name = strings.TrimSuffix(filepath.Base(vf), "-values.yaml")
		}
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			args := []string{"--kube-version", kubeVersion}
			if vf != "" {
				args = append(args, "-f", vf)
			}
			run(t, helm, append([]string{"lint", "--strict", chartDir}, args...)...)
			out := run(t, helm, append([]string{"template", "shoal", chartDir, "--namespace", namespace}, args...)...)
			objs := decodeAll(t, out)
			var names []string
			for _, o := range objs {
				names = append(names, o.String())
			}
			t.Logf("rendered %d objects: %s", len(objs), strings.Join(names, ", "))
			checkObjects(t, objs)
			tlsOn := strings.Contains(out, "\n    [tls]\n")
			if tlsOn && !knowsTLS {
				t.Log("TLS on: role configs not loaded (this binary does not know [tls] yet)")
			}
			runContainers(t, bin, objs, tlsOn && !knowsTLS)
			t.Logf("%s: %.1fs", name, time.Since(start).Seconds())
		})
	}
}

// knowsKey reports whether every role loads a config of just body: the
// strict loader refuses keys a binary does not know.
func knowsKey(t *testing.T, bin, body string) bool {
	t.Helper()
	p := filepath.Join(t.TempDir(), "probe.toml")
	writeFile(t, p, []byte(body))
	for _, role := range []string{"tracker", "origin", "agent", "buildindex"} {
		if err := exec.Command(bin, role, "--config", p, "--print-config").Run(); err != nil {
			return false
		}
	}
	return true
}

// A values file that breaks a rule fails with a message naming the fix.
func TestChartRefusesBadValues(t *testing.T) {
	helm := helmBin(t)
	for _, c := range []struct{ set, want string }{
		{"tracker.replicas=2", "needs a shared peer store"},
		{"tls.enabled=true", "tls.existingSecret"},
	} {
		cmd := exec.Command(helm, "template", "shoal", chartDir, "--kube-version", kubeVersion, "--set", c.set)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("--set %s: %v: want an error naming %q, got:\n%s", c.set, err, c.want, out)
		}
	}
}

// decodeAll splits helm's output into objects, decoding each strictly.
func decodeAll(t *testing.T, out string) []object {
	t.Helper()
	var objs []object
	for _, doc := range strings.Split(out, "\n---") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if string(j) == "null" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(j, &head); err != nil {
			t.Fatal(err)
		}
		target, ok := types[head.APIVersion+" "+head.Kind]
		if !ok {
			t.Errorf("%s %s %s: no known type to check it against", head.APIVersion, head.Kind, head.Metadata.Name)
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(target()); err != nil {
			t.Errorf("%s %s: does not decode strictly into its API type: %v\n%s", head.Kind, head.Metadata.Name, err, doc)
		}
		objs = append(objs, object{Kind: head.Kind, Name: head.Metadata.Name, JSON: j})
	}
	return objs
}

var types = map[string]func() any{
	"v1 ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1 Secret":                               func() any { return &corev1.Secret{} },
	"v1 Service":                              func() any { return &corev1.Service{} },
	"apps/v1 Deployment":                      func() any { return &appsv1.Deployment{} },
	"apps/v1 StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"apps/v1 DaemonSet":                       func() any { return &appsv1.DaemonSet{} },
	"policy/v1 PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1 NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1 ServiceMonitor": func() any { return &serviceMonitor{} },
	"cert-manager.io/v1 Certificate":          func() any { return &certificate{} },
}

// checkObjects: names unique per kind, no secret value in a ConfigMap,
// selectors match their pod templates, workloads reference what exists.
func checkObjects(t *testing.T, objs []object) {
	t.Helper()
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.String()] {
			t.Errorf("%s rendered twice", o)
		}
		seen[o.String()] = true
		if o.Kind == "ConfigMap" {
			for _, s := range secretValues {
				if bytes.Contains(o.JSON, []byte(s)) {
					t.Errorf("%s holds the credential %q: credentials belong in Secrets", o, s)
				}
			}
		}
	}
	for _, o := range objs {
		var spec *corev1.PodTemplateSpec
		var sel map[string]string
		switch o.Kind {
		case "Deployment":
			var d appsv1.Deployment
			json.Unmarshal(o.JSON, &d)
			spec, sel = &d.Spec.Template, d.Spec.Selector.MatchLabels
		case "StatefulSet":
			var s appsv1.StatefulSet
			json.Unmarshal(o.JSON, &s)
			spec, sel = &s.Spec.Template, s.Spec.Selector.MatchLabels
			if !seen["Service/"+s.Spec.ServiceName] {
				t.Errorf("%s: serviceName %s is not rendered", o, s.Spec.ServiceName)
			}
		case "DaemonSet":
			var d appsv1.DaemonSet
			json.Unmarshal(o.JSON, &d)
			spec, sel = &d.Spec.Template, d.Spec.Selector.MatchLabels
		default:
			continue
		}
		for k, v := range sel {
			if spec.Labels[k] != v {
				t.Errorf("%s: selector %s=%s does not match the pod template's labels %v", o, k, v, spec.Labels)
			}
		}
		for _, v := range spec.Spec.Volumes {
			if v.ConfigMap != nil && !seen["ConfigMap/"+v.ConfigMap.Name] {
				t.Errorf("%s: volume %s names ConfigMap %s, which is not rendered", o, v.Name, v.ConfigMap.Name)
			}
		}
	}
}

// runContainers runs every Shoal container of every workload against the
// binary, in a copy of its pod's filesystem. noLoad: render only (TLS keys
// this binary does not know yet).
func runContainers(t *testing.T, bin string, objs []object, noLoad bool) {
	t.Helper()
	cms := map[string]map[string]string{}
	secrets := map[string]map[string][]byte{}
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			var cm corev1.ConfigMap
			json.Unmarshal(o.JSON, &cm)
			cms[cm.Name] = cm.Data
		case "Secret":
			var s corev1.Secret
			json.Unmarshal(o.JSON, &s)
			secrets[s.Name] = s.Data
		}
	}
	for _, o := range objs {
		var spec corev1.PodSpec
		switch o.Kind {
		case "Deployment":
			var d appsv1.Deployment
			json.Unmarshal(o.JSON, &d)
			spec = d.Spec.Template.Spec
		case "StatefulSet":
			var s appsv1.StatefulSet
			json.Unmarshal(o.JSON, &s)
			spec = s.Spec.Template.Spec
			for _, pvc := range s.Spec.VolumeClaimTemplates { // a PVC each: an empty directory here
				spec.Volumes = append(spec.Volumes, corev1.Volume{Name: pvc.Name})
			}
		case "DaemonSet":
			var d appsv1.DaemonSet
			json.Unmarshal(o.JSON, &d)
			spec = d.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			if len(c.Command) > 0 {
				continue // not the shoal image's entrypoint (Redis)
			}
			runContainer(t, bin, o, spec, c, cms, secrets, noLoad)
		}
	}
}

func runContainer(t *testing.T, bin string, o object, spec corev1.PodSpec, c corev1.Container,
	cms map[string]map[string]string, secrets map[string]map[string][]byte, noLoad bool) {
	t.Helper()
	root := t.TempDir()
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	rewrite := func(s string) string {
		for _, p := range []string{"/etc/shoal/", "/var/lib/shoal/"} {
			s = strings.ReplaceAll(s, p, root+p)
		}
		return s
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("%s %s: mount %s names no volume", o, c.Name, m.Name)
			continue
		}
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case v.ConfigMap != nil:
			for k, body := range cms[v.ConfigMap.Name] {
				writeFile(t, filepath.Join(dir, k), []byte(rewrite(body)))
			}
		case v.Secret != nil:
			data, rendered := secrets[v.Secret.SecretName]
			for _, it := range v.Secret.Items {
				b, ok := data[it.Key]
				if !rendered {
					b, ok = existingSecret(t, it.Key, cms), true // the user's Secret
				}
				if !ok {
					t.Errorf("%s %s: Secret %s has no key %s", o, c.Name, v.Secret.SecretName, it.Key)
				}
				writeFile(t, filepath.Join(dir, it.Path), b)
			}
		}
	}
	args := append([]string{}, c.Args...)
	if len(args) == 0 {
		t.Errorf("%s %s: no args: the image's entrypoint would print its help", o, c.Name)
		return
	}
	switch args[0] {
	case "tracker", "origin", "agent", "buildindex":
		if noLoad {
			return
		}
		for i := range args {
			args[i] = rewrite(args[i])
		}
		args = append(args, "--print-config")
	case "node-setup":
		var kept []string
		for _, a := range args {
			switch {
			case a == "--wait", a == "--restart-containerd", strings.HasPrefix(a, "--restart-command="):
				continue // no waiting, and never a real containerd restart
			case strings.HasPrefix(a, "--prepare-") && os.Geteuid() != 0:
				continue // chown needs root
			case strings.HasPrefix(a, "--root="):
				a = "--root=" + filepath.Join(root, strings.TrimPrefix(a, "--root="))
			}
			kept = append(kept, a)
		}
		args = kept
	default:
		t.Errorf("%s %s: args[0] %q is not a shoal subcommand the chart should run", o, c.Name, args[0])
		return
	}
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Errorf("%s container %s: shoal %s: %v\n%s%s", o, c.Name, strings.Join(args, " "), err, out.String(), errb.String())
		return
	}
	for _, s := range secretValues {
		if strings.Contains(out.String(), s) || strings.Contains(errb.String(), s) {
			t.Errorf("%s %s: shoal printed the credential %q", o, c.Name, s)
		}
	}
	if args[0] == "node-setup" {
		t.Logf("%s %s: node-setup wrote:\n%s%s", o, c.Name, listTree(t, filepath.Join(root, "host")), errb.String())
	}
}

// existingSecret is what a user's Secret (not rendered by the chart) holds
// under key: a docker config with credentials for every upstream that the
// origin config reads one for, a generated certificate, or a token.
func existingSecret(t *testing.T, key string, cms map[string]map[string]string) []byte {
	t.Helper()
	switch key {
	case ".dockerconfigjson":
		auths := map[string]any{}
		for _, data := range cms {
			var hosts []string
			for _, block := range strings.Split(data["origin.toml"], "[[upstream]]")[1:] {
				if strings.Contains(block, "docker_config") {
					h := block[strings.Index(block, `host = "`)+8:]
					hosts = append(hosts, h[:strings.Index(h, `"`)])
				}
			}
			sort.Strings(hosts)
			for _, h := range hosts {
				auths[h] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("user:" + h))}
			}
		}
		b, _ := json.Marshal(map[string]any{"auths": auths})
		return b
	case "tls.crt", "tls.key", "ca.crt":
		return testCerts(t)[key]
	}
	return []byte("a-secret-from-the-users-secret\n")
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			fmt.Fprintf(&b, "  /%s\n", rel)
		}
		return nil
	})
	return b.String()
}
