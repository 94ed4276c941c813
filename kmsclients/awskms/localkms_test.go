package awskms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// The world the seed file creates.
const (
	testAccount = "111122223333"
	testRegion  = "eu-west-2"
	key1ID      = "0b5c7f0e-1f62-4d7a-9b1e-6a0c2f1d3e41"
	key2ID      = "7d3e9a2c-5b84-4c61-8f07-2e9d1a6b4c52"
	aliasName   = "alias/trousseau-test"
	arnPrefix   = "arn:aws:kms:" + testRegion + ":" + testAccount + ":"
	key1ARN     = arnPrefix + "key/" + key1ID
	key2ARN     = arnPrefix + "key/" + key2ID
	aliasARN    = arnPrefix + aliasName
)

// localKMSBinary finds the emulator built by hack/local-kms.sh.
func localKMSBinary(t testing.TB) string {
	return testutil.LocalKMS.Binary(t)
}

// localKMS is one emulator process, restartable on the same port and data.
type localKMS struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	starts  int
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// startLocalKMS starts an emulator on a free port with a fresh data
// directory, seeded with two keys and an alias to the first.
func startLocalKMS(t testing.TB) *localKMS {
	t.Helper()
	s := &localKMS{t: t, bin: localKMSBinary(t), dir: t.TempDir()}
	writeSeed(t, filepath.Join(s.dir, "seed.yaml"))
	s.start()
	t.Cleanup(s.stop)
	return s
}

func writeSeed(t testing.TB, path string) {
	seed := fmt.Sprintf(`Keys:
  Symmetric:
    Aes:
      - Metadata: {KeyId: %s}
        BackingKeys: [%s]
      - Metadata: {KeyId: %s}
        BackingKeys: [%s]
Aliases:
  - AliasName: %s
    TargetKeyId: %s
`, key1ID, randomHex(t), key2ID, randomHex(t), aliasName, key1ID)
	if err := os.WriteFile(path, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

var startedRE = regexp.MustCompile(`Local KMS started on 0\.0\.0\.0:(\d+)`)

// start runs the emulator; the first start takes a port from the kernel
// (PORT=0), restarts reuse it.
func (s *localKMS) start() {
	s.t.Helper()
	s.starts++
	s.logPath = filepath.Join(s.dir, fmt.Sprintf("local-kms.%d.log", s.starts))
	logFile, err := os.Create(s.logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(s.bin)
	// A whole environment, so that nothing inherited (its older unprefixed
	// variables such as REGION) changes the emulator's world.
	cmd.Env = []string{
		"PORT=" + strconv.Itoa(s.port),
		"KMS_ACCOUNT_ID=" + testAccount,
		"KMS_REGION=" + testRegion,
		"KMS_SEED_PATH=" + filepath.Join(s.dir, "seed.yaml"),
		"KMS_DATA_PATH=" + filepath.Join(s.dir, "data"),
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start local-kms: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(s.exited)
	s.port = s.waitStarted()
}

// waitStarted waits for the emulator to log that it listens.
func (s *localKMS) waitStarted() int {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		logText, _ := os.ReadFile(s.logPath)
		if m := startedRE.FindSubmatch(logText); m != nil {
			port, _ := strconv.Atoi(string(m[1]))
			return port
		}
		select {
		case <-s.exited:
			s.t.Fatalf("local-kms exited at start:\n%s", logText)
		case <-time.After(20 * time.Millisecond):
		}
	}
	logText, _ := os.ReadFile(s.logPath)
	s.t.Fatalf("local-kms did not start in time:\n%s", logText)
	return 0
}

// stop kills the emulator and waits for it to exit, so that its port and
// database lock are free for a restart.
func (s *localKMS) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

func (s *localKMS) restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

func (s *localKMS) endpoint() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// testLoadOptions keep the tests off the machine's AWS configuration:
// dummy static credentials, no shared files.
func testLoadOptions() []func(*config.LoadOptions) error {
	return []func(*config.LoadOptions) error{
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTROUSSEAUTEST", "not-a-secret", "")),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	}
}

// newTestBackend returns a backend on endpoint; cfg.Endpoint is set here.
func newTestBackend(t testing.TB, name, endpoint string, cfg Config) *Backend {
	t.Helper()
	cfg.Endpoint = endpoint
	b, err := newBackend(context.Background(), name, cfg, testLoadOptions()...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// adminClient is a plain KMS client for the tests' own calls (DisableKey).
func adminClient(t testing.TB, endpoint string) *kms.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		append(testLoadOptions(), config.WithRegion(testRegion))...)
	if err != nil {
		t.Fatal(err)
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(endpoint) })
}
