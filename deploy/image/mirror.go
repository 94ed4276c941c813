package main

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// mirrors maps a Debian archive, the first element of a packages.lock path
// ("debian", "debian-security"), to the base URLs serving it, in the order
// they are tried.
type mirrors map[string][]string

// debianSuiteRE is a Debian suite an apt source may name: a codename or
// class, with the update and security suffixes ("bookworm-security", and
// the older "bookworm/updates"). Other suites belong to other repositories.
var debianSuiteRE = regexp.MustCompile(`^[a-z]+(-updates|-security|/updates)?$`)

// aptDir is where the build host keeps its apt sources.
const aptDir = "/etc/apt"

// hostMirrors reads the Debian mirrors of the host's apt sources under dir:
// sources.list and sources.list.d/*.list (one-line format), and
// sources.list.d/*.sources (deb822). Air-gapped sites point these at their
// own mirror, so the image builder uses it with no flag.
func hostMirrors(dir string) (mirrors, error) {
	m := mirrors{}
	files := []string{filepath.Join(dir, "sources.list")}
	for _, pattern := range []string{"*.list", "*.sources"} {
		matches, err := filepath.Glob(filepath.Join(dir, "sources.list.d", pattern))
		if err != nil {
			return nil, err
		}
		files = append(files, matches...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(f, ".sources") {
			m.addDeb822(string(b))
		} else {
			m.addOneLine(string(b))
		}
	}
	return m, nil
}

// addOneLine reads "deb [options] URI suite component..." lines.
func (m mirrors) addOneLine(text string) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			i := slices.IndexFunc(f, func(s string) bool { return strings.HasSuffix(s, "]") })
			if i < 0 {
				continue
			}
			f = f[i+1:]
		}
		if len(f) >= 3 {
			m.add(f[0], f[1], f[2:])
		}
	}
}

// addDeb822 reads stanzas of Types, URIs, Suites, Components (and Enabled).
func (m mirrors) addDeb822(text string) {
	for _, stanza := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") || strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
				continue // comments, and continuations (a Signed-By key)
			}
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !slices.Contains(strings.Fields(fields["types"]), "deb") || strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			for _, suite := range strings.Fields(fields["suites"]) {
				m.add(uri, suite, strings.Fields(fields["components"]))
			}
		}
	}
}

// add records uri as a mirror of the archive suite belongs to, when it is
// a Debian suite with the main component, served over HTTP(S).
func (m mirrors) add(uri, suite string, components []string) {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !debianSuiteRE.MatchString(suite) || !slices.Contains(components, "main") {
		return
	}
	archive := "debian"
	if strings.HasSuffix(suite, "-security") || strings.HasSuffix(suite, "/updates") {
		archive = "debian-security"
	}
	base := strings.TrimSuffix(uri, "/")
	if !slices.Contains(m[archive], base) {
		m[archive] = append(m[archive], base)
	}
}

// parseMirrorFlag reads --debian-mirror: one URL holding debian/ and
// debian-security/, or archive=URL pairs separated by commas.
func parseMirrorFlag(v string) (mirrors, error) {
	m := mirrors{}
	if !strings.Contains(v, "=") {
		base := strings.TrimSuffix(v, "/")
		if err := checkMirrorURL(base); err != nil {
			return nil, err
		}
		return mirrors{"debian": {base + "/debian"}, "debian-security": {base + "/debian-security"}}, nil
	}
	for _, pair := range strings.Split(v, ",") {
		archive, base, _ := strings.Cut(pair, "=")
		base = strings.TrimSuffix(base, "/")
		if archive != "debian" && archive != "debian-security" {
			return nil, fmt.Errorf("--debian-mirror %s: archive %q is not debian or debian-security", pair, archive)
		}
		if err := checkMirrorURL(base); err != nil {
			return nil, err
		}
		m[archive] = append(m[archive], base)
	}
	return m, nil
}

func checkMirrorURL(base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--debian-mirror %q: want an http(s) URL, or debian=URL,debian-security=URL", base)
	}
	return nil
}

// urls are where a packages.lock path may be downloaded from.
func (m mirrors) urls(lockPath string) ([]string, error) {
	archive, rest, _ := strings.Cut(lockPath, "/")
	var out []string
	for _, base := range m[archive] {
		out = append(out, base+"/"+rest)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no mirror of the Debian archive %s/: the host's apt sources (%s/sources.list, sources.list.d/) name none; pass --debian-mirror URL", archive, aptDir)
	}
	return out, nil
}
