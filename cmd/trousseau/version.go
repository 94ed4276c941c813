package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
)

// version and buildDate are set at build time with -ldflags
// "-X main.version=... -X main.buildDate=...".
var version, buildDate = "", ""

// versionInfo is what `trousseau version` prints; -o json writes it
// (docs/reference/cli.md).
type versionInfo struct {
	Version    string   `json:"version"`
	Commit     string   `json:"commit"` // VCS revision, "-dirty" if modified; "unknown"
	Built      string   `json:"built"`  // -X main.buildDate, else the commit's time; "unknown"
	GoVersion  string   `json:"goVersion"`
	FIPSMode   string   `json:"fips140"`    // off, on or only (GODEBUG fips140)
	FIPSModule string   `json:"fipsModule"` // GOFIPS140's frozen module, or "latest": none frozen
	Backends   []string `json:"backends"`   // the backend kinds built in
}

// NewCmdVersion builds `trousseau version`.
func NewCmdVersion(s streams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version [-o text|json]",
		Short: "Print the version, the FIPS 140-3 mode and module, the commit, build date, Go version and backend kinds built in",
		Long: `Print the version on the first line and the FIPS 140-3 mode and Go
Cryptographic Module on the second (scripts may read both), then the
commit, build date, Go version and the backend kinds built in.

The version is the one stamped at build (-ldflags -X main.version=...),
else the module version or VCS revision go build recorded.

Exit status: 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output, formatText, formatJSON); err != nil {
				return err
			}
			v := readVersionInfo()
			if output == formatJSON {
				return writeJSON(s.Out, v)
			}
			v.writeText(s.Out)
			return nil
		},
	}
	addOutputFlag(cmd, &output, formatText, formatJSON)
	return cmd
}

func (v versionInfo) writeText(w io.Writer) {
	fmt.Fprintf(w, "%s\n%s\n", v.Version, fipsmode.Summary())
	fmt.Fprintf(w, "commit:   %s\nbuilt:    %s\ngo:       %s\nbackends: %s\n", v.Commit, v.Built, v.GoVersion, strings.Join(v.Backends, ", "))
}

func readVersionInfo() versionInfo {
	bi, _ := debug.ReadBuildInfo()
	v := versionInfo{Version: versionOf(version, bi), Commit: "unknown", Built: "unknown", GoVersion: runtime.Version(),
		FIPSMode: fipsmode.Mode(), FIPSModule: fipsmode.Module(), Backends: config.Kinds()}
	vcs := vcsSettings(bi)
	if rev := vcs["vcs.revision"]; rev != "" {
		v.Commit = revision(vcs)
	}
	switch {
	case buildDate != "":
		v.Built = buildDate
	case vcs["vcs.time"] != "":
		v.Built = vcs["vcs.time"] + " (the commit's time)"
	}
	return v
}

// buildVersion is this binary's version ([versionOf] its build info).
func buildVersion() string {
	bi, _ := debug.ReadBuildInfo()
	return versionOf(version, bi)
}

// versionOf is the version stamped at build (make, the image, the
// release), else the one go build recorded in bi: the module's (go install
// ...@v1.2.3), a pseudo-version of the checkout's commit
// (v0.0.0-20261207012226-ad5db4b73779+dirty), else the VCS revision; or
// "(devel)" where it knew none (-buildvcs=false, no module version).
func versionOf(stamped string, bi *debug.BuildInfo) string {
	switch {
	case stamped != "":
		return stamped
	case bi == nil:
		return "(devel)"
	case bi.Main.Version != "" && bi.Main.Version != "(devel)":
		return bi.Main.Version
	}
	if vcs := vcsSettings(bi); vcs["vcs.revision"] != "" {
		return revision(vcs)
	}
	return "(devel)"
}

// revision is the commit, "-dirty" when the tree had changes.
func revision(vcs map[string]string) string {
	if vcs["vcs.modified"] == "true" {
		return vcs["vcs.revision"] + "-dirty"
	}
	return vcs["vcs.revision"]
}

// vcsSettings are the vcs.* settings go build recorded.
func vcsSettings(bi *debug.BuildInfo) map[string]string {
	out := map[string]string{}
	if bi != nil {
		for _, s := range bi.Settings {
			if strings.HasPrefix(s.Key, "vcs.") {
				out[s.Key] = s.Value
			}
		}
	}
	return out
}
