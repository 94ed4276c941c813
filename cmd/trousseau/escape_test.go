package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// fakeScreen clears the terminal and prints a verdict of its own.
const fakeScreen = "\x1b[2J\x1b[H all recovered"

// An etcd writer stores a genuine value under a key made to clear the
// operator's screen: recover, drill and decrypt-value print that key (as
// a failure example, a resource, in an error) escaped, with no ESC byte
// on either stream.
func TestSnapshotKeysArePrintedEscaped(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	genuine := f.Stored["/registry/secrets/default/db-password"]
	for _, key := range []string{"/registry/" + fakeScreen + "/default/x", "/registry/secrets/default/" + fakeScreen} {
		if _, err := f.Etcd.Client.Put(context.Background(), key, string(genuine)); err != nil {
			t.Fatal(err)
		}
	}
	snap := f.Snapshot(t, t.TempDir())
	cfg := f.Plugin.WriteConfig(t, "local-a", "local-b", "local-c")
	etcdctlJSON, _ := json.Marshal(map[string]any{"kvs": []map[string][]byte{{"key": []byte("/registry/secrets/default/" + fakeScreen), "value": genuine}}})
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
	}{
		{"recover", []string{"recover", "--dry-run", "--etcd-snapshot", snap}, ""},
		{"drill", []string{"drill", "--etcd-snapshot", snap}, ""},
		{"drill json", []string{"drill", "-o", "json", "--etcd-snapshot", snap}, ""},
		{"decrypt-value", []string{"decrypt-value", "--input", "json"}, string(etcdctlJSON)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := run(t, tc.stdin, append(tc.args, "--config", cfg)...)
			all := out + errOut
			if err != nil {
				all += err.Error()
			}
			if strings.Contains(all, "\x1b") {
				t.Fatalf("ESC printed:\n%q", all)
			}
			if !strings.Contains(all, `\x1b[2J`) && !strings.Contains(all, `\u001b[2J`) {
				t.Fatalf("the key is not shown:\n%s", all)
			}
		})
	}
}

// Names and answers the drill table and JSON show come from headers and
// backends; none reaches the terminal raw.
func TestDrillReportIsPrintedEscaped(t *testing.T) {
	evil := fakeScreen + "\u202e\u009b2J\x7f\n"
	r := &recovery.DrillReport{Describe: evil, DEKs: []recovery.DrilledDEK{
		{DEKCheck: envelope.DEKCheck{KeyID: evil, Threshold: 2, Working: 2, Created: time.Unix(0, 0),
			Shares: []envelope.ShareCheck{{Backend: evil, OK: true}, {Backend: "b", Err: errors.New(evil)}}},
			Resources: map[string]int{evil: 1}, From: []string{"state: " + evil}},
		{Err: errors.New(evil), Objects: 1},
		{DEKCheck: envelope.DEKCheck{KeyID: evil}, Tampered: true, Err: errors.New(evil)},
	}}
	var table, js bytes.Buffer
	if err := writeDrillTable(&table, r, 1); err != nil {
		t.Fatal(err)
	}
	if err := writeDrillJSON(&js, r, 1); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"table": table.String(), "json": js.String()} {
		for _, bad := range []string{"\x1b", "\u202e", "\u009b", "\x7f"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s holds %q:\n%s", name, bad, out)
			}
		}
	}
	// Each untrusted newline is escaped: one line per DEK, a header, the
	// source and one backend error.
	if n := strings.Count(table.String(), "\n"); n != 6 {
		t.Errorf("table has %d lines:\n%s", n, table.String())
	}
	var back drillJSON
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.DEKs[0].KeyID != evil || back.DEKs[0].Backends[evil] != "ok" {
		t.Errorf("JSON changed the data: %v %+v", err, back)
	}
}
