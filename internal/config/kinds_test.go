package config

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/trousseau-io/trousseau/kmsclients/awskms"
	"github.com/trousseau-io/trousseau/kmsclients/kmsplugin"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
	"github.com/trousseau-io/trousseau/kmsclients/local"
	"github.com/trousseau-io/trousseau/kmsclients/vault"
)

// TestEveryKindIsComplete walks the kinds table: a kind without its docs
// page, whose tests do not run the conformance suite, that has no fuzz
// target, or with a fuzz target the Makefile's fuzz target leaves out,
// fails it.
func TestEveryKindIsComplete(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			for _, gap := range kindGaps(repoRoot, k.name, packageDir(k)) {
				t.Error(gap)
			}
		})
	}
}

// repoRoot is the repository's root, seen from this package's directory.
const repoRoot = "../.."

// packageDir is the directory of a kind's package in the repository.
func packageDir(k kind) string {
	module := strings.TrimSuffix(reflect.TypeFor[Config]().PkgPath(), "/internal/config")
	return strings.TrimPrefix(k.typ.PkgPath(), module+"/")
}

// conformancePkg and conformanceFunc name the conformance suite's entry
// point (kmstest.Run), taken from the function itself so that renaming or
// moving it cannot leave this walk looking for a name no test calls.
var conformancePkg, conformanceFunc = func() (string, string) {
	full := runtime.FuncForPC(reflect.ValueOf(kmstest.Run).Pointer()).Name()
	dot := strings.LastIndex(full, ".")
	return full[:dot], full[dot+1:]
}()

// A line of the Makefile's fuzz target: -fuzz '^FuzzX$$' ... ./dir/
var fuzzLineRE = regexp.MustCompile(`-fuzz '\^(Fuzz\w+)\$\$'.*\s\./(\S+?)/?$`)

// kindGaps lists what the kind named name, whose package is pkgDir, lacks
// in the repository at root.
func kindGaps(root, name, pkgDir string) []string {
	var gaps []string
	if _, err := os.Stat(filepath.Join(root, "docs", "backends", name+".md")); err != nil {
		gaps = append(gaps, fmt.Sprintf("no docs page: %v", err))
	}
	tests, err := parseTests(filepath.Join(root, pkgDir))
	if err != nil {
		return append(gaps, err.Error())
	}
	if !tests.runConformance {
		gaps = append(gaps, fmt.Sprintf("the tests of %s do not run the conformance suite: no call of %s.%s in its _test.go files", pkgDir, path.Base(conformancePkg), conformanceFunc))
	}
	if len(tests.fuzzTargets) == 0 {
		gaps = append(gaps, fmt.Sprintf("the tests of %s have no fuzz target: add a func FuzzX(f *testing.F) for what the backend parses of untrusted bytes (the stored wrapped share, a key identity, a key file)", pkgDir))
	}
	listed, err := makefileFuzzTargets(filepath.Join(root, "Makefile"))
	if err != nil {
		return append(gaps, err.Error())
	}
	for _, fuzz := range tests.fuzzTargets {
		if !listed[pkgDir+" "+fuzz] {
			gaps = append(gaps, fmt.Sprintf("%s of %s is not in the Makefile's fuzz target", fuzz, pkgDir))
		}
	}
	return gaps
}

// packageTests is what kindGaps reads of a package's tests.
type packageTests struct {
	runConformance bool     // some _test.go file calls kmstest.Run
	fuzzTargets    []string // the names of its fuzz targets
}

// parseTests reads every _test.go file in dir, as Go: a call or a fuzz
// target in a comment or a string does not count.
func parseTests(dir string) (packageTests, error) {
	var out packageTests
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil || len(files) == 0 {
		return out, fmt.Errorf("no tests in %s", dir)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return out, err
		}
		testingNames := importNames(f, "testing")
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && isFuzzTarget(fn, testingNames) {
				out.fuzzTargets = append(out.fuzzTargets, fn.Name.Name)
			}
		}
		kmstestNames := importNames(f, conformancePkg)
		ast.Inspect(f, func(n ast.Node) bool {
			if isCallOf(n, kmstestNames, conformanceFunc) {
				out.runConformance = true
			}
			return !out.runConformance
		})
	}
	return out, nil
}

// importNames is the set of names by which file f refers to the package
// imported from importPath (none if f does not import it).
func importNames(f *ast.File, importPath string) map[string]bool {
	names := map[string]bool{}
	for _, imp := range f.Imports {
		if p, err := strconv.Unquote(imp.Path.Value); err != nil || p != importPath {
			continue
		}
		if imp.Name != nil {
			names[imp.Name.Name] = true
		} else {
			names[path.Base(importPath)] = true
		}
	}
	return names
}

// isCallOf reports whether n is a call pkg.fn(...) for pkg one of pkgNames.
func isCallOf(n ast.Node, pkgNames map[string]bool, fn string) bool {
	call, ok := n.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != fn {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && pkgNames[id.Name]
}

// isFuzzTarget reports whether fn is one as go test sees it: a top-level
// function FuzzXxx (Xxx not starting with a lower-case letter) of one
// *testing.F parameter.
func isFuzzTarget(fn *ast.FuncDecl, testingNames map[string]bool) bool {
	rest, ok := strings.CutPrefix(fn.Name.Name, "Fuzz")
	if !ok || fn.Recv != nil || (rest != "" && unicode.IsLower([]rune(rest)[0])) {
		return false
	}
	params := fn.Type.Params.List
	if len(params) != 1 || len(params[0].Names) > 1 {
		return false
	}
	star, ok := params[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := star.X.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "F" {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && testingNames[id.Name]
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
	imports := "import (\n\t\"testing\"\n\n\t" + strconv.Quote(conformancePkg) + "\n)\n"
	const (
		conformance = "func TestConformance(t *testing.T) { kmstest.Run(t, h) }\n"
		fuzz        = "func FuzzOpen(f *testing.F) {}\n"
		fuzzLine    = "\t$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./kmsclients/toy/\n"
		noConf      = "do not run the conformance suite"
		noFuzz      = "have no fuzz target"
	)
	for _, tc := range []struct {
		name, tests, makefile string
		docs                  bool
		want                  string // "" for none
	}{
		{"complete", imports + conformance + fuzz, "fuzz:\n" + fuzzLine, true, ""},
		{"conformance run through a renamed import", strings.Replace(imports, "\t\"github.com", "\tkt \"github.com", 1) + strings.Replace(conformance, "kmstest.", "kt.", 1) + fuzz, "fuzz:\n" + fuzzLine, true, ""},
		{"no docs page", imports + conformance + fuzz, "fuzz:\n" + fuzzLine, false, "no docs page"},
		{"no conformance run", imports + fuzz, "fuzz:\n" + fuzzLine, true, noConf},
		{"kmstest helpers but no conformance run", imports + "func TestX(t *testing.T) { kmstest.WantKind(t, \"x\", nil, nil) }\n" + fuzz, "fuzz:\n" + fuzzLine, true, noConf},
		{"conformance run in a comment", imports + "// kmstest.Run(t, h)\n" + fuzz, "fuzz:\n" + fuzzLine, true, noConf},
		{"Run of another package", "import (\n\t\"testing\"\n\n\tkmstest \"example.com/other\"\n)\n" + conformance + fuzz, "fuzz:\n" + fuzzLine, true, noConf},
		{"no fuzz target", imports + conformance, "fuzz:\n", true, noFuzz},
		{"a Fuzz function of *testing.T", imports + conformance + "func FuzzOpen(t *testing.T) {}\n", "fuzz:\n" + fuzzLine, true, noFuzz},
		{"a Fuzzy function", imports + conformance + "func Fuzzy(f *testing.F) {}\n", "fuzz:\n", true, noFuzz},
		{"a method named Fuzz", imports + conformance + "func (x) FuzzOpen(f *testing.F) {}\n", "fuzz:\n" + fuzzLine, true, noFuzz},
		{"unparsable tests", imports + conformance + fuzz + "func {", "fuzz:\n" + fuzzLine, true, "expected"},
		{"fuzz target not listed", imports + conformance + fuzz, "fuzz:\n", true, "FuzzOpen of kmsclients/toy is not in the Makefile's fuzz target"},
		{"fuzz target listed for another package", imports + conformance + fuzz, "fuzz:\n" + strings.Replace(fuzzLine, "toy", "other", 1), true, "FuzzOpen of kmsclients/toy is not"},
		{"fuzz target listed outside the fuzz target", imports + conformance + fuzz, "fuzz:\n\nbench:\n" + fuzzLine, true, "FuzzOpen of kmsclients/toy is not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			write(t, filepath.Join(root, "kmsclients", "toy", "toy_test.go"), "package toy\n\n"+tc.tests)
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

// TestKindNamesListsTheTable: messages list every kind of the table, in
// table order, as a sentence, and the table and the docs/backends/ pages
// are the same set of kinds (a page left for a kind gone fails too).
func TestKindNamesListsTheTable(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{nil, ""},
		{[]string{"a"}, "a"},
		{[]string{"a", "b"}, "a or b"},
		{[]string{"a", "b", "c"}, "a, b or c"},
	} {
		if got := sentence(tc.names); got != tc.want {
			t.Errorf("sentence(%q) = %q, want %q", tc.names, got, tc.want)
		}
	}

	// Read back, the list is the table's names, in its order.
	listed := strings.Split(strings.Replace(kindNames(), " or ", ", ", 1), ", ")
	if len(listed) != len(kinds) {
		t.Fatalf("kindNames() = %q lists %d kinds, the table has %d", kindNames(), len(listed), len(kinds))
	}
	for i, k := range kinds {
		if listed[i] != k.name {
			t.Errorf("kindNames() = %q: kind %d is %q, the table's is %q", kindNames(), i, listed[i], k.name)
		}
	}

	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "backends", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs/backends/*.md pages: %v", err)
	}
	inTable := map[string]bool{}
	for _, k := range kinds {
		inTable[k.name] = true
	}
	for _, p := range pages {
		if kind := strings.TrimSuffix(filepath.Base(p), ".md"); !inTable[kind] {
			t.Errorf("%s documents a kind that is not in the table of kinds", p)
		}
	}
	if len(pages) != len(inTable) || len(inTable) != len(kinds) {
		t.Errorf("%d docs/backends pages, %d kinds in the table (%d distinct names)", len(pages), len(kinds), len(inTable))
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
		{"no kind", Backend{Name: "a"}, "", "set exactly one backend kind (" + kindNames() + ")"},
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

// TestBackendBlocksDecode: a backend entry is read as its fields, the
// one kind block decoded strictly into its kind's config; what the
// decoder alone cannot word (a list for a map, a negative slot) the
// field walk names in the file's words.
func TestBackendBlocksDecode(t *testing.T) {
	for _, tc := range []struct{ name, entry, want string }{
		{"a list for a map", "{name: a, awskms: {keyID: alias/x, encryptionContext: [1]}}", "backends[0].awskms.encryptionContext: want a mapping, got a list"},
		{"a list in a map", "{name: a, awskms: {keyID: alias/x, encryptionContext: {a: [1]}}}", "backends[0].awskms.encryptionContext.a: want a string, got a list"},
		{"a negative slot", "{name: a, pkcs11: {module: /m, tokenLabel: t, pinFile: /p, keyLabel: k, slot: -1}}", "backends[0].pkcs11.slot: want a whole number of 0 or more, got -1"},
		{"a null block", "{name: a, local: null}", "backends[0]: set exactly one backend kind (" + kindNames() + ")"},
		{"a null block beside one", "{name: a, local: {}, vault: null}", "backends[0]: local.keyFile: required"},
		{"a number in a map is a string", "{name: a, awskms: {keyID: alias/x, encryptionContext: {a: 1}}}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte("threshold: 1\nbackends:\n  - " + tc.entry + "\n"))
			if tc.want == "" {
				if err != nil || c.Backends[0].Spec.(*awskms.Config).EncryptionContext["a"] != "1" {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("without the field walk", func(t *testing.T) {
		for entry, want := range map[string]string{
			`{"name":"a","locall":{}}`:              `backend: unknown field "locall"`,
			`{"name":"a","local":{"keyFlie":"/k"}}`: `backend local: error unmarshaling JSON: while decoding JSON: json: unknown field "keyFlie"`,
			`3`:                                     "backend: want a mapping of fields",
		} {
			var b Backend
			if err := json.Unmarshal([]byte(entry), &b); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want %q", entry, err, want)
			}
		}
	})
	t.Run("name first, then the block", func(t *testing.T) {
		raw, err := json.Marshal(Backend{Name: "a", Spec: &local.Config{KeyFile: "/k"}})
		if want := `{"name":"a","local":{"keyFile":"/k"}}`; err != nil || string(raw) != want {
			t.Fatalf("MarshalJSON = %s, %v; want %s", raw, err, want)
		}
	})
}

// TestLeftOutKindIsRefusedByName: a block of a kind this binary was
// built without is refused naming the field and the build tag, not as an
// unknown field; Kinds and the messages list only the kinds compiled in.
func TestLeftOutKindIsRefusedByName(t *testing.T) {
	saved := kinds
	t.Cleanup(func() { kinds = saved })
	kinds = slices.DeleteFunc(slices.Clone(kinds), func(k kind) bool { return k.name == "gcpkms" })

	y := "threshold: 1\nbackends:\n  - {name: a, local: {keyFile: /a}}\n  - {name: g, gcpkms: {keyName: k}}\n"
	_, err := Parse([]byte(y))
	want := `backends[1]: kind "gcpkms" is not compiled into this binary (built with -tags no_gcpkms); use a build with it`
	if err == nil || err.Error() != want {
		t.Fatalf("Parse: %v\nwant %s", err, want)
	}
	var b Backend
	if err := json.Unmarshal([]byte(`{"name":"g","gcpkms":{}}`), &b); err == nil || !strings.Contains(err.Error(), "built with -tags no_gcpkms") {
		t.Fatalf("UnmarshalJSON: %v", err)
	}
	if slices.Contains(Kinds(), "gcpkms") || strings.Contains(kindNames(), "gcpkms") {
		t.Fatalf("Kinds() = %v, kindNames() = %q: gcpkms is left out", Kinds(), kindNames())
	}
	if _, err := Parse([]byte(strings.Replace(y, "gcpkms", "gcpkmz", 1))); err == nil || !strings.Contains(err.Error(), `unknown field "backends[1].gcpkmz"`) {
		t.Fatalf("a kind that never was: %v", err)
	}
}

// TestRegisterKeepsTableOrder: kinds registered in any order (init runs
// the kind_<name>.go files in file-name order) sit in kindOrder.
func TestRegisterKeepsTableOrder(t *testing.T) {
	saved := kinds
	t.Cleanup(func() { kinds = saved })
	kinds = nil
	for _, i := range []int{3, 0, 6, 1, 5, 2, 4} {
		register(saved[i])
	}
	if !slices.Equal(Kinds(), kindOrder) {
		t.Fatalf("Kinds() = %v, want %v", Kinds(), kindOrder)
	}
}
