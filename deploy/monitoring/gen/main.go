// Command gen writes deploy/monitoring/trousseau-dashboard.json from the
// panels of package monitoring, and copies it and the alert rules into the
// Helm chart, which cannot read files outside its directory:
//
//	cd deploy && go generate ./monitoring
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
	"github.com/trousseau-io/trousseau/deploy/monitoring"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := repo.Root()
	if err != nil {
		return err
	}
	dashboard, err := monitoring.Dashboard()
	if err != nil {
		return err
	}
	rules, err := os.ReadFile(filepath.Join(root, monitoring.Dir, monitoring.RulesFile))
	if err != nil {
		return err
	}
	for path, b := range map[string][]byte{
		filepath.Join(root, monitoring.Dir, monitoring.DashboardFile):        dashboard,
		filepath.Join(root, monitoring.ChartFiles, monitoring.DashboardFile): dashboard,
		filepath.Join(root, monitoring.ChartFiles, monitoring.RulesFile):     rules,
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
