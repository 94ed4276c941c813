package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// devBackends are the embedded default's backends.
var devBackends = []string{"local-a", "local-b", "local-c"}

// setUpDev creates (or reuses) the dev mode's key files in stateDir,
// writes the config it will run with to stateDir/config.yaml, and tells
// the operator what it did and how to point kube-apiserver at it.
func setUpDev(out io.Writer, socket, stateDir, healthListen string) (*config.Config, error) {
	socket, err := filepath.Abs(socket)
	if err != nil {
		return nil, err
	}
	stateDir, err = filepath.Abs(stateDir)
	if err != nil {
		return nil, err
	}
	keyDir := filepath.Join(stateDir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return nil, fmt.Errorf("dev mode: %w", err)
	}
	cfg := &config.Config{
		Socket:    socket,
		StateDir:  filepath.Join(stateDir, "state"),
		Threshold: 2,
		Health:    config.Health{Listen: healthListen},
		Log:       config.Log{Level: "info", Format: "text"},
	}
	var created []string
	for _, name := range devBackends {
		p := filepath.Join(keyDir, name+".key")
		err := local.GenerateKeyFile(p)
		switch {
		case err == nil:
			created = append(created, p)
		case !errors.Is(err, fs.ErrExist):
			return nil, fmt.Errorf("dev mode: %w", err)
		}
		cfg.Backends = append(cfg.Backends, config.Backend{Name: name, Spec: &local.Config{KeyFile: p}})
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	raw, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(stateDir, "config.yaml")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		return nil, fmt.Errorf("dev mode: %w", err)
	}
	printDevSummary(out, cfg, cfgPath, created)
	return cfg, nil
}

func printDevSummary(out io.Writer, cfg *config.Config, cfgPath string, created []string) {
	fmt.Fprintf(out, "Trousseau dev mode: %d of %d local key-file backends.\n", cfg.Threshold, len(cfg.Backends))
	if len(created) > 0 {
		fmt.Fprintln(out, "Created key files:")
		for _, p := range created {
			fmt.Fprintln(out, "  "+p)
		}
	} else {
		fmt.Fprintln(out, "Reusing the key files in "+filepath.Dir(cfg.Backends[0].Spec.(*local.Config).KeyFile))
	}
	fmt.Fprintf(out, "Config written to %s (run it again with: trousseau serve --config %s)\n", cfgPath, cfgPath)
	fmt.Fprintf(out, "Socket: %s   Health and metrics: http://%s/readyz /metrics\n", cfg.Socket, cfg.Health.Listen)
	fmt.Fprintf(out, "\nEncryptionConfiguration for kube-apiserver (--encryption-provider-config):\n\n%s\n", EncryptionConfigSnippet(cfg.Socket))
}

// EncryptionConfigSnippet is the EncryptionConfiguration that points
// kube-apiserver at a Trousseau socket: deploy/encryption-config.yaml's,
// on socket.
func EncryptionConfigSnippet(socket string) string {
	return `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, configmaps]
    providers:
      - kms:
          apiVersion: v2
          name: trousseau
          endpoint: unix://` + socket + `
          timeout: 3s
      - identity: {}
`
}
