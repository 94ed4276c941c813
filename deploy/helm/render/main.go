// Command render prints Trousseau's Helm chart rendered as YAML, with
// Helm's own library (what `helm template` would print), so that tools
// without Helm - the e2e suite, which dry-runs the objects against a real
// kube-apiserver - can use it:
//
//	cd deploy && go run ./helm/render [-f values.yaml]... [--set key=value]...
//	cd deploy && go run ./helm/render -servicemonitor-crd
//
// The release is "trousseau" in kube-system unless -release and
// -namespace say otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/trousseau-io/trousseau/deploy/helm"
	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var files, sets listFlag
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.Var(&files, "f", "values file (repeatable; later files win)")
	fs.Var(&sets, "set", "key=value, as helm --set (repeatable)")
	rel := helm.DefaultRelease
	fs.StringVar(&rel.Name, "release", rel.Name, "release name")
	fs.StringVar(&rel.Namespace, "namespace", rel.Namespace, "release namespace")
	crd := fs.Bool("servicemonitor-crd", false, "print prometheus-operator's ServiceMonitor CRD instead (for validating the chart's ServiceMonitor)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *crd {
		b, err := helm.ServiceMonitorCRD(ctx)
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	}
	root, err := repo.Root()
	if err != nil {
		return err
	}
	// Relative values files are relative to where the command was started.
	vals, err := helm.Values(files, sets)
	if err != nil {
		return err
	}
	kube, err := helm.KubeVersion(root)
	if err != nil {
		return err
	}
	manifest, err := helm.Render(filepath.Join(root, repo.ChartDir), rel, kube, vals)
	if err != nil {
		return err
	}
	_, err = io.WriteString(out, manifest)
	return err
}
