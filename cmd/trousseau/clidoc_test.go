package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

var updateReference = flag.Bool("update-cli-reference", false, "rewrite docs/reference/cli.md from the command tree")

// cliReference is docs/reference/cli.md, from the repository root.
const cliReference = "../../docs/reference/cli.md"

// jsonSchemas are the types each command's -o json writes.
var jsonSchemas = map[string]reflect.Type{
	"trousseau config check": reflect.TypeFor[checkReport](),
	"trousseau drill":        reflect.TypeFor[drillJSON](),
	"trousseau recover":      reflect.TypeFor[recoverSummary](),
	"trousseau rotate":       reflect.TypeFor[rotateResult](),
	"trousseau status":       reflect.TypeFor[statusReport](),
	"trousseau version":      reflect.TypeFor[versionInfo](),
}

// jsonNotes describe the -o json of commands that write another
// project's objects rather than a type of ours.
var jsonNotes = map[string]string{
	"trousseau decrypt-value": "The decrypted object as a Kubernetes manifest, as `kubectl get -o json` would print it: `apiVersion`, `kind`, `metadata` (without server-managed fields: resourceVersion, uid, creationTimestamp, managedFields, ownerReferences) and the resource's own fields (`data`, `type`, `spec`, ...).",
}

// TestCLIReferenceIsCurrent: docs/reference/cli.md is what the command
// tree and the -o json types make of it, so it cannot drift from the
// binary. Rewrite it with go test ./cmd/trousseau -run
// TestCLIReferenceIsCurrent -update-cli-reference.
func TestCLIReferenceIsCurrent(t *testing.T) {
	var b bytes.Buffer
	writeCLIReference(t, &b, NewRootCmd(streams{In: strings.NewReader(""), Out: &bytes.Buffer{}, Err: &bytes.Buffer{}}))
	if *updateReference {
		must(t, os.MkdirAll(filepath.Dir(cliReference), 0o755))
		must(t, os.WriteFile(cliReference, b.Bytes(), 0o644))
	}
	have, err := os.ReadFile(cliReference)
	must(t, err)
	if !bytes.Equal(have, b.Bytes()) {
		t.Fatalf("docs/reference/cli.md is not what the command tree says: run go test ./cmd/trousseau -run TestCLIReferenceIsCurrent -update-cli-reference")
	}
}

// TestEveryCommandSaysItsExitStatus: each command's help, so the
// reference, says what its exit codes mean.
func TestEveryCommandSaysItsExitStatus(t *testing.T) {
	for _, c := range documented(NewRootCmd(streams{})) {
		if c.Runnable() && !strings.Contains(c.Long, "Exit status") && c.Parent().Name() != "completion" {
			t.Errorf("%s: its help does not say its exit status", c.CommandPath())
		}
	}
}

// documented are the commands the reference lists: all but help and
// cobra's hidden ones.
func documented(root *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, c := range allCommands(root) {
		if c.IsAvailableCommand() && c.Name() != "help" {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CommandPath() < out[j].CommandPath() })
	return out
}

func writeCLIReference(t *testing.T, w *bytes.Buffer, root *cobra.Command) {
	fmt.Fprint(w, `# Command line reference

Generated from the command tree by TestCLIReferenceIsCurrent in
cmd/trousseau (which fails when this file and the binary differ): do not
edit by hand.

One grammar on every command: -o/--output is the output format (text by
default; json, and yaml where objects are written); exit status 0 means
success, 1 failure, and 2 a command's own second verdict where it has one
(config check: valid but would start unready; drill: a DEK unrecoverable).
Errors go to stderr, one line per error, prefixed with "trousseau:". The JSON
schemas below are stable: fields may be added, none renamed or removed
without a release note. `+"`trousseau completion bash|zsh|fish|powershell`"+`
prints a shell completion script, which completes flag values too (every
-o, --log-level, --resources, files and directories).

`)
	for _, c := range documented(root) {
		fmt.Fprintf(w, "- [%s](#%s)\n", c.CommandPath(), strings.ReplaceAll(c.CommandPath(), " ", "-"))
	}
	for _, c := range documented(root) {
		writeCommand(t, w, c)
	}
}

func writeCommand(t *testing.T, w *bytes.Buffer, c *cobra.Command) {
	fmt.Fprintf(w, "\n## %s\n\n%s\n\n", c.CommandPath(), c.Short)
	if c.Runnable() {
		fmt.Fprintf(w, "```\n%s\n```\n\n", c.UseLine())
	}
	if c.Long != "" {
		fmt.Fprintf(w, "```\n%s\n```\n\n", strings.TrimSpace(c.Long))
	}
	var rows []string
	c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden && f.Shorthand == "" || f.Name == "help" {
			return
		}
		name := "`--" + f.Name + "`"
		switch {
		case f.Hidden: // a short flag whose long name is not for use (recover's -o)
			name = "`-" + f.Shorthand + "`"
		case f.Shorthand != "":
			name = "`-" + f.Shorthand + "`, " + name
		}
		def := f.DefValue
		if def == "" || def == "[]" {
			def = "-"
		} else {
			def = "`" + def + "`"
		}
		varname, usage := pflag.UnquoteUsage(f)
		if varname == "" {
			varname = f.Value.Type() // bool
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |", name, varname, def, strings.ReplaceAll(usage, "|", "\\|")))
	})
	if len(rows) > 0 {
		fmt.Fprintf(w, "| flag | value | default | meaning |\n| --- | --- | --- | --- |\n%s\n", strings.Join(rows, "\n"))
	}
	if note, ok := jsonNotes[c.CommandPath()]; ok {
		fmt.Fprintf(w, "\n### -o json\n\n%s\n", note)
	}
	if typ, ok := jsonSchemas[c.CommandPath()]; ok {
		fmt.Fprintf(w, "\n### -o json\n\n| field | type | meaning |\n| --- | --- | --- |\n")
		writeFields(t, w, c.CommandPath(), "", typ)
	}
}

// writeFields lists typ's JSON fields, each with its meaning from
// fieldDocs: a field without one fails the test.
func writeFields(t *testing.T, w *bytes.Buffer, cmd, prefix string, typ reflect.Type) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := prefix + name
		doc, ok := fieldDocs[cmd+" "+path]
		if !ok {
			t.Errorf("%s -o json: field %s has no meaning in fieldDocs", cmd, path)
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", path, jsonType(f.Type), doc)
		if inner := structOf(f.Type); inner != nil && inner.PkgPath() != "time" {
			writeFields(t, w, cmd, path+jsonSuffix(f.Type)+".", inner)
		}
	}
}

// structOf is the struct a field holds, directly or in a list, or nil.
func structOf(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() == reflect.Struct {
		return t
	}
	return nil
}

func jsonSuffix(t reflect.Type) string {
	if t.Kind() == reflect.Slice {
		return "[]"
	}
	return ""
}

func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return jsonType(t.Elem()) + " or null"
	case reflect.Slice:
		return "list of " + jsonType(t.Elem())
	case reflect.Map:
		return "object of " + jsonType(t.Elem())
	case reflect.Struct:
		if t.PkgPath() == "time" {
			return "string (RFC 3339)"
		}
		return "object"
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Float32, reflect.Float64:
		return "number"
	}
	return "integer"
}
