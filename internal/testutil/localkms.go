package testutil

import (
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
)

// The world every local-kms the tests start holds: one account and
// region, two AES keys (key 1 also under an alias), each with a random
// backing key.
const (
	AWSAccount  = "111122223333"
	AWSRegion   = "eu-west-2"
	AWSKey1ID   = "0b5c7f0e-1f62-4d7a-9b1e-6a0c2f1d3e41"
	AWSKey2ID   = "7d3e9a2c-5b84-4c61-8f07-2e9d1a6b4c52"
	AWSAlias    = "alias/trousseau-test"
	awsARNStart = "arn:aws:kms:" + AWSRegion + ":" + AWSAccount + ":"
	AWSKey1ARN  = awsARNStart + "key/" + AWSKey1ID
	AWSKey2ARN  = awsARNStart + "key/" + AWSKey2ID
	AWSAliasARN = awsARNStart + AWSAlias
)

// Emulator is one local-kms process (an AWS KMS emulator), restartable on
// the same port and data.
type Emulator struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	starts  int
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// StartLocalKMS starts local-kms (built by hack/local-kms.sh) on a free
// port with a fresh data directory and the world above, until the test
// ends.
func StartLocalKMS(t testing.TB) *Emulator {
	t.Helper()
	s := &Emulator{t: t, bin: LocalKMS.Binary(t), dir: t.TempDir()}
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
`, AWSKey1ID, randomHex(t), AWSKey2ID, randomHex(t), AWSAlias, AWSKey1ID)
	if err := os.WriteFile(filepath.Join(s.dir, "seed.yaml"), []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

func randomHex(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

var startedRE = regexp.MustCompile(`Local KMS started on 0\.0\.0\.0:(\d+)`)

// Start runs the emulator; the first start takes a port from the kernel
// (PORT=0), restarts reuse it.
func (s *Emulator) Start() {
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
		"KMS_ACCOUNT_ID=" + AWSAccount,
		"KMS_REGION=" + AWSRegion,
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
func (s *Emulator) waitStarted() int {
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

// Stop kills the emulator and waits for it to exit, so that its port and
// database lock are free for a restart.
func (s *Emulator) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart stops the emulator and starts it again on the same port and data.
func (s *Emulator) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// Endpoint is the emulator's URL.
func (s *Emulator) Endpoint() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Signal sends sig to the running emulator (SIGSTOP and SIGCONT freeze
// and thaw it); it does nothing while the emulator is stopped.
func (s *Emulator) Signal(sig os.Signal) {
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}
