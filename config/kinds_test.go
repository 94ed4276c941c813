package config

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients/kmsplugin"
	"github.com/trousseau-io/trousseau/kmsclients/local"
	"github.com/trousseau-io/trousseau/kmsclients/vault"
)

// TestEveryKindIsComplete walks the kinds table: a kind without its docs
// page, with a fuzz target the Makefile's fuzz target leaves out, or
// whose tests do not run the conformance suite, fails it.
func TestEveryKindIsComplete(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			for _, gap := range kindGaps("..", k.name, packageDir(k)) {
				t.Error(gap)
			}
		})
	}
}

// packageDir is the directory of a kind's package in the repository.
func packageDir(k kind) string {
	module := path.Dir(reflect.TypeFor[Config]().PkgPath())
	return strings.TrimPrefix(k.typ.PkgPath(), module+"/")
}

var (
	fuzzFuncRE = regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	// A line of the Makefile's fuzz target: -fuzz '^FuzzX$$' ... ./dir/
	fuzzLineRE = regexp.MustCompile(`-fuzz '\^(Fuzz\w+)\$\$'.*\s\./(\S+?)/?$`)
)

// kindGaps lists what the kind named name, whose package is pkgDir, lacks
// in the repository at root.
func kindGaps(root, name, pkgDir string) []string {
	var gaps []string
	if _, err := os.Stat(filepath.Join(root, "docs", "backends", name+".md")); err != nil {
		gaps = append(gaps, fmt.Sprintf("no docs page: %v", err))
	}
	tests, err := readTests(filepath.Join(root, pkgDir))
	if err != nil {
		return append(gaps, err.Error())
	}
	if !strings.Contains(tests, "kmstest.") {
		gaps = append(gaps, fmt.Sprintf("the tests of %s do not run the kmsclients/kmstest conformance suite", pkgDir))
	}
	listed, err := makefileFuzzTargets(filepath.Join(root, "Makefile"))
	if err != nil {
		return append(gaps, err.Error())
	}
	for _, m := range fuzzFuncRE.FindAllStringSubmatch(tests, -1) {
		if !listed[pkgDir+" "+m[1]] {
			gaps = append(gaps, fmt.Sprintf("%s of %s is not in the Makefile's fuzz target", m[1], pkgDir))
		}
	}
	return gaps
}

// readTests returns the text of every _test.go file in dir.
func readTests(dir string) (string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no tests in %s", dir)
	}
	var all strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		all.Write(b)
		all.WriteByte('\n')
	}
	return all.String(), nil
}

// makefileFuzzTargets reads the recipe of the Makefile's fuzz target, as
// a set of "dir FuzzName".
func makefileFuzzTargets(makefile string) (map[string]bool, error) {
	raw, err := os.ReadFile(makefile)
	if err != nil {
		return nil, err
	}
	_, recipe, found := strings.Cut(string(raw), "\nfuzz:\n")
	if !found {
		return nil, fmt.Errorf("%s has no fuzz target", makefile)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(recipe, "\n") {
		if !strings.HasPrefix(line, "\t") {
			break // the recipe ends at the first line without a tab
		}
		if m := fuzzLineRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			out[m[2]+" "+m[1]] = true
		}
	}
	return out, nil
}

// TestKindGapsFindEachMissingPart: the walk above fails for each part a
// kind can lack, in a repository made up for it.
func TestKindGapsFindEachMissingPart(t *testing.T) {
	const (
		conformance = "func TestConformance(t *testing.T) { kmstest.Run(t, h) }\n"
		fuzz        = "func FuzzOpen(f *testing.F) {}\n"
		fuzzLine    = "\t$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./kmsclients/toy/\n"
	)
	for _, tc := range []struct {
		name, tests, makefile string
		docs                  bool
		want                  string // "" for none
	}{
		{"complete", conformance + fuzz, "fuzz:\n" + fuzzLine, true, ""},
		{"complete without fuzz target", conformance, "fuzz:\n", true, ""},
		{"no docs page", conformance, "fuzz:\n", false, "no docs page"},
		{"no conformance run", fuzz, "fuzz:\n" + fuzzLine, true, "do not run the kmsclients/kmstest conformance suite"},
		{"fuzz target not listed", conformance + fuzz, "fuzz:\n", true, "FuzzOpen of kmsclients/toy is not in the Makefile's fuzz target"},
		{"fuzz target listed for another package", conformance + fuzz, "fuzz:\n" + strings.Replace(fuzzLine, "toy", "other", 1), true, "FuzzOpen of kmsclients/toy is not"},
		{"fuzz target listed outside the fuzz target", conformance + fuzz, "fuzz:\n\nbench:\n" + fuzzLine, true, "FuzzOpen of kmsclients/toy is not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			write(t, filepath.Join(root, "kmsclients", "toy", "toy_test.go"), "package toy\n"+tc.tests)
			write(t, filepath.Join(root, "Makefile"), "build:\n\tgo build\n\n"+tc.makefile)
			if tc.docs {
				write(t, filepath.Join(root, "docs", "backends", "toy.md"), "# toy\n")
			}
			gaps := strings.Join(kindGaps(root, "toy", "kmsclients/toy"), "\n")
			if (tc.want == "") != (gaps == "") || !strings.Contains(gaps, tc.want) {
				t.Fatalf("gaps %q, want %q", gaps, tc.want)
			}
		})
	}
}

func write(t *testing.T, p, text string) {
	t.Helper()
	mustDo(t, os.MkdirAll(filepath.Dir(p), 0o755))
	mustDo(t, os.WriteFile(p, []byte(text), 0o644))
}

// TestKindNamesListsTheTable: messages list every kind, in table order.
func TestKindNamesListsTheTable(t *testing.T) {
	if got, want := kindNames(), "local, vault, awskms, azurekv, kmsplugin, gcpkms or pkcs11"; got != want {
		t.Fatalf("kindNames() = %q, want %q", got, want)
	}
}

// TestBackendInGo: a Backend made in Go (as dev mode makes its config)
// validates, marshals and builds like one read from YAML, and a Spec
// that is no kind's config is refused, not a panic.
func TestBackendInGo(t *testing.T) {
	keyFile := keyFiles(t, 1)[0]
	for _, tc := range []struct {
		name     string
		backend  Backend
		wantKind string
		want     string // the validation error, "" for none
	}{
		{"local", Backend{Name: "a", Spec: &local.Config{KeyFile: keyFile}}, "local", ""},
		{"vault", Backend{Name: "v", Spec: &vault.Config{Address: "http://127.0.0.1:8200", KeyName: "k", Auth: vault.Auth{TokenFile: keyFile}}}, "vault", ""},
		{"kmsplugin", Backend{Name: "p", Spec: &kmsplugin.Config{Endpoint: "unix:///run/kmsplugin/aws.sock", Timeout: kmsplugin.Duration{Duration: 3 * time.Second}}}, "kmsplugin", ""},
		{"invalid kmsplugin block", Backend{Name: "p", Spec: &kmsplugin.Config{Endpoint: "unix:///@kms"}}, "kmsplugin", "backends[0]: kmsplugin.endpoint: \"unix:///@kms\" is an abstract socket"},
		{"no kind", Backend{Name: "a"}, "", "set exactly one backend kind (local, vault, awskms, azurekv, kmsplugin, gcpkms or pkcs11)"},
		{"nil pointer", Backend{Name: "a", Spec: (*local.Config)(nil)}, "", "set exactly one backend kind ("},
		{"not a pointer", Backend{Name: "a", Spec: local.Config{KeyFile: keyFile}}, "", "local.Config is not the config of a backend kind"},
		{"invalid block", Backend{Name: "a", Spec: &local.Config{}}, "local", "backends[0]: local.keyFile: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Threshold: 1, Backends: []Backend{tc.backend}}
			c.SetDefaults()
			if got := tc.backend.Kind(); got != tc.wantKind {
				t.Errorf("Kind() = %q, want %q", got, tc.wantKind)
			}
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
			if err != nil {
				if _, err := c.BuildBackends(context.Background()); err == nil {
					t.Fatal("BuildBackends built an invalid backend")
				}
				return
			}
			raw, err := c.Marshal()
			mustDo(t, err)
			again, err := Parse(raw)
			if err != nil || !reflect.DeepEqual(again.Backends, c.Backends) {
				t.Fatalf("marshal and parse: %v\n%s", err, raw)
			}
			bs, err := c.BuildBackends(context.Background())
			if err != nil || bs[0].Name() != tc.backend.Name {
				t.Fatalf("BuildBackends: %v", err)
			}
		})
	}
}
