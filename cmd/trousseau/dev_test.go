package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevSnippetIsTheDeployedEncryptionConfig: the EncryptionConfiguration
// dev mode prints is deploy/encryption-config.yaml's (secrets and
// configmaps), on the dev socket.
func TestDevSnippetIsTheDeployedEncryptionConfig(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "encryption-config.yaml"))
	must(t, err)
	var deployed []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			deployed = append(deployed, strings.Replace(l, "/var/run/trousseau/kms.sock", "/tmp/dev/kms.sock", 1))
		}
	}
	if got := strings.TrimSpace(EncryptionConfigSnippet("/tmp/dev/kms.sock")); got != strings.Join(deployed, "\n") {
		t.Fatalf("dev mode prints:\n%s\ndeploy/encryption-config.yaml says:\n%s", got, strings.Join(deployed, "\n"))
	}
}
