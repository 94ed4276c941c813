package pkcs11

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string // the PIN, or a substring of the error
		ok            bool
	}{
		{"plain", "1234", 0o600, "1234", true},
		{"newline", "1234\n", 0o600, "1234", true},
		{"crlf", "1234\r\n", 0o400, "1234", true},
		{"one newline only", "1234\n\n", 0o600, "1234\n", true},
		{"group may read", "1234", 0o640, "1234", true},
		{"spaces kept", " 12 34 ", 0o600, " 12 34 ", true},
		{"others may read", "1234", 0o604, "has mode 0604; it must not be readable or writable by others (chmod 600)", false},
		{"group may write", "1234", 0o620, "has mode 0620", false},
		{"empty", "", 0o600, "is empty", false},
		{"newline only", "\n", 0o600, "is empty", false},
		{"too long", strings.Repeat("1", maxPINFile+1), 0o600, "holds more than 256 bytes", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tc.name, " ", "-"), tc.content, tc.mode)
			pin, err := readPIN(p)
			switch {
			case tc.ok && (err != nil || string(pin) != tc.want):
				t.Fatalf("readPIN: %q, %v; want %q", pin, err, tc.want)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("readPIN: %q, %v; want an error saying %q", pin, err, tc.want)
			case !tc.ok && strings.Contains(err.Error(), "1234"):
				t.Fatalf("the error %q holds the PIN", err)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := readPIN(filepath.Join(dir, "absent"))
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "absent") {
			t.Fatalf("readPIN of a missing file: %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := readPIN(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
			t.Fatalf("readPIN of a directory: %v", err)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		p := filepath.Join(dir, "fifo")
		if err := mkfifo(p); err != nil {
			t.Skipf("no FIFO here: %v", err)
		}
		if _, err := readPIN(p); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("readPIN of a FIFO: %v", err)
		}
	})
}
