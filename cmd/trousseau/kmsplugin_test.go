package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsv2 "k8s.io/kms/apis/v2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// statusOnly is a KMS v2 plugin that answers Status with a key_id and
// nothing else: all that `config check` asks.
type statusOnly struct{ keyID string }

func (s statusOnly) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: s.keyID}, nil
}

func (statusOnly) Encrypt(context.Context, string, []byte) (*kmsservice.EncryptResponse, error) {
	return nil, status.Error(codes.Unimplemented, "status only")
}

func (statusOnly) Decrypt(context.Context, string, *kmsservice.DecryptRequest) ([]byte, error) {
	return nil, status.Error(codes.Unimplemented, "status only")
}

// servePlugin serves a statusOnly plugin on a socket in dir until the
// test ends, and returns its endpoint.
func servePlugin(t *testing.T, dir, name, keyID string) string {
	t.Helper()
	path := filepath.Join(dir, name+".sock")
	ln, err := net.Listen("unix", path)
	must(t, err)
	gs := grpc.NewServer()
	kmsv2.RegisterKeyManagementServiceServer(gs, kmsservice.NewGRPCService(path, time.Minute, statusOnly{keyID}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("plugin %s: %v", name, err)
		}
	}()
	t.Cleanup(func() { gs.Stop(); <-done })
	return "unix://" + path
}

// kmspluginConfig writes a config of a key file and a kmsplugin backend
// on each endpoint, 2 of n, with socket as Trousseau's own.
func kmspluginConfig(t *testing.T, dir, socket string, endpoints ...string) string {
	t.Helper()
	key := filepath.Join(dir, "break-glass.key")
	if _, err := os.Stat(key); err != nil {
		must(t, local.GenerateKeyFile(key))
	}
	y := "socket: " + socket + "\nstateDir: " + filepath.Join(dir, "state") + "\nthreshold: 2\nbackends:\n" +
		"  - name: break-glass\n    local: {keyFile: " + key + "}\n"
	for i, ep := range endpoints {
		y += "  - name: plugin-" + string(rune('a'+i)) + "\n    kmsplugin: {endpoint: " + ep + ", timeout: 5s}\n"
	}
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte(y), 0o600))
	return path
}

// TestConfigCheckKmspluginSameKeyID: two kmsplugin backends on two
// sockets whose plugins report one key_id are one custodian (one KMS key
// behind two plugins): `config check` refuses them, as it refuses two
// backends on one key file.
func TestConfigCheckKmspluginSameKeyID(t *testing.T) {
	const keyID = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
	dir := shortTemp(t)
	one, two := servePlugin(t, dir, "one", keyID), servePlugin(t, dir, "two", keyID)
	other := servePlugin(t, dir, "other", keyID+"-other")
	socket := filepath.Join(dir, "kms.sock")

	out, _, err := run(t, "", "config", "check", "--config", kmspluginConfig(t, dir, socket, one, two))
	want := "backends plugin-a and plugin-b hold the same key (kmsplugin:" + two + ":" + keyID + ")"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("config check: %v\n%s\nwant %q", err, out, want)
	}
	if !regexp.MustCompile(`(?m)^plugin-a +yes `).MatchString(out) || !regexp.MustCompile(`(?m)^plugin-b +yes `).MatchString(out) {
		t.Fatalf("both plugins should answer:\n%s", out)
	}

	if out, _, err := run(t, "", "config", "check", "--config", kmspluginConfig(t, dir, socket, one, other)); err != nil {
		t.Fatalf("config check with two key_ids: %v\n%s", err, out)
	}
}

// TestServeValidatesTheSocketItUses: serve's --socket replaces the file's
// before the config is validated, so that a kmsplugin endpoint is
// checked against the socket serve will listen on.
func TestServeValidatesTheSocketItUses(t *testing.T) {
	dir := shortTemp(t)
	fileSocket, plugin := filepath.Join(dir, "kms.sock"), filepath.Join(dir, "plugin.sock")
	want := "backends[1].kmsplugin.endpoint: unix://" + plugin + " is Trousseau's own socket"

	cfg := kmspluginConfig(t, dir, fileSocket, "unix://"+plugin)
	if _, _, err := run(t, "", "serve", "--config", cfg, "--socket", plugin); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("serve --socket set to a custodian's socket: %v, want %q", err, want)
	}
	o := &serveOptions{configFile: cfg, socket: plugin}
	if _, err := o.loadConfig(); err == nil || !strings.Contains(err.Error(), "config "+cfg+": "+want) {
		t.Fatalf("loadConfig: %v, want %q", err, want)
	}

	// The file names the custodian's socket as its own; --socket does not.
	cfg = kmspluginConfig(t, dir, plugin, "unix://"+plugin)
	if _, err := (&serveOptions{configFile: cfg}).loadConfig(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("loadConfig without --socket: %v, want %q", err, want)
	}
	o = &serveOptions{configFile: cfg, socket: fileSocket, stateDir: filepath.Join(dir, "other-state"), healthListen: "127.0.0.1:0"}
	c, err := o.loadConfig()
	if err != nil {
		t.Fatalf("loadConfig with --socket away from the endpoint: %v", err)
	}
	if c.Socket != fileSocket || c.StateDir != o.stateDir || c.Health.Listen != o.healthListen {
		t.Fatalf("overrides not applied: %+v", c)
	}
}
