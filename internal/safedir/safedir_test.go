package safedir

import (
	"os"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode os.FileMode
		ours bool
		want string // "" accepted
	}{
		{"0700", 0o700, true, ""},
		{"0755", 0o755, true, ""},
		{"group-writable", 0o770, true, "chmod go-w"},
		{"world-writable", 0o757, false, "chmod go-w"},
		{"sticky like /tmp", 0o777 | os.ModeSticky, false, "1777"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := Check("test dir", dir, tc.ours)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if os.Geteuid() == 0 {
		dir := t.TempDir()
		os.Chown(dir, 65534, 65534)
		if err := Check("test dir", dir, true); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("another user's dir: %v", err)
		}
		if err := Check("test dir", dir, false); err != nil {
			t.Fatalf("another user's dir when the owner is not judged: %v", err)
		}
	}
}
