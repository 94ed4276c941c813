package grpcserver_test

import (
	"crypto/fips140"
	"runtime"
	"strconv"
	"testing"

	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
)

// TestBuildInfo: trousseau_build_info is 1, with the version given and the
// process's own Go version, FIPS mode and module; "unknown" where nothing is known
// (a test binary has no VCS stamp).
func TestBuildInfo(t *testing.T) {
	for name, c := range map[string]struct {
		opts    []grpcserver.MetricsOption
		version string
	}{
		"with a version": {[]grpcserver.MetricsOption{grpcserver.WithVersion("v1.2.3")}, "v1.2.3"},
		"without":        {nil, "unknown"},
	} {
		t.Run(name, func(t *testing.T) {
			families, err := grpcserver.NewMetrics(c.opts...).Registry.Gather()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"version": c.version, "revision": "unknown", "goversion": runtime.Version(), "fips": strconv.FormatBool(fips140.Enabled()), "fips_module": fipsmode.Module()}
			for _, f := range families {
				if f.GetName() != "trousseau_build_info" {
					continue
				}
				if len(f.Metric) != 1 || f.Metric[0].GetGauge().GetValue() != 1 {
					t.Fatalf("trousseau_build_info: %v, want one series at 1", f.Metric)
				}
				got := map[string]string{}
				for _, l := range f.Metric[0].Label {
					got[l.GetName()] = l.GetValue()
				}
				if len(got) != len(want) {
					t.Errorf("labels %v, want %v", got, want)
				}
				for k, v := range want {
					if got[k] != v {
						t.Errorf("label %s = %q, want %q", k, got[k], v)
					}
				}
				return
			}
			t.Fatal("no trousseau_build_info")
		})
	}
}
