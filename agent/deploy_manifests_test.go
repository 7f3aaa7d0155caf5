package agent

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// The Kubernetes manifests in deploy/agent/ must describe this agent: kubeconform
// (scripts/lint-deploy.sh) checks them against Kubernetes' schemas, this test against the code.
// The verifier Service is the one the Envoy renderer's default ext-auth URL names, the
// container serves the verifier on that Service's target port, and every IMPRUN_AGENT_*
// variable is one cmd/agent reads.
func TestDeployManifestsMatchTheAgent(t *testing.T) {
	type envVar struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	}
	var deployment struct {
		Metadata struct{ Namespace string }
		Spec     struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Args  []string
						Env   []envVar
						Ports []struct {
							Name          string
							ContainerPort int `yaml:"containerPort"`
						}
					}
				}
			}
		}
	}
	var service struct {
		Metadata struct{ Name, Namespace string }
		Spec     struct {
			Ports []struct {
				Port       int
				TargetPort string `yaml:"targetPort"`
			}
		}
	}
	read := func(name string, into any) {
		raw, err := os.ReadFile(filepath.Join("..", "deploy", "agent", name))
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(raw, into), name)
	}
	read("40-deployment.yaml", &deployment)
	read("50-service.yaml", &service)

	svc, ns, port, path := splitServiceURL(defaultEnvoyVerifierURL)
	assert.Equal(t, svc, service.Metadata.Name, "Service name")
	assert.Equal(t, ns, service.Metadata.Namespace, "Service namespace")
	require.Len(t, service.Spec.Ports, 1)
	assert.Equal(t, port, service.Spec.Ports[0].Port, "Service port")
	assert.Equal(t, "/verify", path)
	assert.Equal(t, ns, deployment.Metadata.Namespace, "the Deployment's namespace is the Service's")

	require.Len(t, deployment.Spec.Template.Spec.Containers, 1)
	c := deployment.Spec.Template.Spec.Containers[0]
	assert.Equal(t, []string{"run"}, c.Args)
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	targetPort := 0
	for _, p := range c.Ports {
		if p.Name == service.Spec.Ports[0].TargetPort {
			targetPort = p.ContainerPort
		}
	}
	_, listenPort, err := net.SplitHostPort(env["IMPRUN_AGENT_VERIFY_LISTEN"])
	require.NoError(t, err, "IMPRUN_AGENT_VERIFY_LISTEN")
	assert.Equal(t, strconv.Itoa(targetPort), listenPort, "the verifier listens on the Service's target port")
	assert.Equal(t, DataPlaneFiles, env["IMPRUN_AGENT_DATA_PLANE"])
	assert.Equal(t, GatewayClassEnvoy, env["IMPRUN_AGENT_GATEWAY_CLASS"])
	assert.Equal(t, RenderOptions{}.withDefaults().Namespace, env["IMPRUN_AGENT_NAMESPACE"])
	assert.NotContains(t, env, "IMPRUN_AGENT_VERIFIER_URL", "the default verifier URL is the Service's")

	main, err := os.ReadFile(filepath.Join("..", "cmd", "agent", "main.go"))
	require.NoError(t, err)
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`env(?:Bool)?\("(IMPRUN_AGENT_[A-Z_]+)"`).FindAllSubmatch(main, -1) {
		known[string(m[1])] = true
	}
	require.NotEmpty(t, known)
	for name := range env {
		assert.True(t, known[name], "cmd/agent does not read %s", name)
	}
	for _, name := range []string{"IMPRUN_AGENT_SERVER", "IMPRUN_AGENT_API", "IMPRUN_AGENT_STATE_DIR", "IMPRUN_AGENT_REGISTRATION_TOKEN"} {
		assert.Contains(t, env, name)
	}
}
