package fipsmode

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSummaryOfEachBuildAndMode builds a program with and without the
// frozen module and runs it in each mode: the summary must follow the
// build and GODEBUG.
func TestSummaryOfEachBuildAndMode(t *testing.T) {
	dir := t.TempDir()
	build := func(gofips string) string {
		bin := filepath.Join(dir, "summary-"+gofips)
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/summary")
		cmd.Env = append(os.Environ(), "GOFIPS140="+gofips)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build with GOFIPS140=%s: %v\n%s", gofips, err, out)
		}
		return bin
	}
	plain, frozen := build("off"), build("v1.0.0")
	for _, tc := range []struct{ bin, godebug, want string }{
		{plain, "fips140=off", "FIPS 140-3 mode off, Go Cryptographic Module latest"},
		{plain, "fips140=only", "FIPS 140-3 mode only, Go Cryptographic Module latest"},
		{frozen, "", "FIPS 140-3 mode on, Go Cryptographic Module v1.0.0-"},
		{frozen, "fips140=only", "FIPS 140-3 mode only, Go Cryptographic Module v1.0.0-"},
	} {
		cmd := exec.Command(tc.bin)
		cmd.Env = append(os.Environ(), "GODEBUG="+tc.godebug)
		out, err := cmd.Output()
		if err != nil || !strings.HasPrefix(string(out), tc.want) {
			t.Errorf("%s with GODEBUG=%s: %q %v, want %q...", filepath.Base(tc.bin), tc.godebug, out, err, tc.want)
		}
	}
}
