package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
}

// parseDockerfile reads the instructions of each stage (a stage starts
// at FROM). Comments and blank lines are dropped.
func parseDockerfile(t *testing.T, path string) [][]instruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if body, cont := strings.CutSuffix(line, "\\"); cont {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %s before FROM", path, in.cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	return stages
}

func find(stage []instruction, cmd string) []string {
	var out []string
	for _, in := range stage {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// shellWords splits a command line as sh would for plain and
// double-quoted words (enough for the Dockerfile's go build).
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// labelRE reads the key="value" pairs of a LABEL instruction.
var labelRE = regexp.MustCompile(`([a-z0-9.]+)="([^"]*)"`)

// TestDockerfileMatchesImage checks that the Dockerfile builds what `make
// image` builds: the same go build, the binary at the same path, the same
// user, entrypoint and labels, on the same Debian release and C libraries.
func TestDockerfileMatchesImage(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2 (build, final)", len(stages))
	}
	build, final := stages[0], stages[1]

	t.Run("builder", func(t *testing.T) {
		from := strings.Fields(build[0].args)
		if len(from) != 3 || !strings.EqualFold(from[1], "AS") || from[2] != "build" {
			t.Fatalf("FROM %s: want <golang image> AS build", build[0].args)
		}
		goMod := string(readFile(t, filepath.Join(root, "go.mod")))
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
		if m == nil {
			t.Fatal("go.mod has no go directive")
		}
		if want := "golang:" + m[1] + "-bookworm"; from[0] != want {
			t.Errorf("builder image %s, want %s: go.mod's Go, on Debian 12 like the image's glibc", from[0], want)
		}
		var goBuild []string
		for _, run := range find(build, "RUN") {
			if w := shellWords(run); slices.Contains(w, "go") && slices.Contains(w, "build") {
				goBuild = w
			}
		}
		if len(goBuild) == 0 || goBuild[0] != "CGO_ENABLED=1" || goBuild[1] != "go" {
			t.Fatalf("RUN %q: want CGO_ENABLED=1 go build ...", goBuild)
		}
		if got, want := goBuild[2:], goBuildArgs("${VERSION}", "/out/trousseau"); !slices.Equal(got, want) {
			t.Errorf("go %q\nwant go %q (deploy/image's goBuildArgs)", got, want)
		}
		if !slices.Contains(find(build, "ARG"), "VERSION") {
			t.Error("the builder stage needs ARG VERSION, without a default")
		}
	})

	t.Run("final", func(t *testing.T) {
		base := final[0].args
		if !strings.HasPrefix(base, "gcr.io/distroless/cc-debian12") {
			t.Errorf("final stage FROM %s: want gcr.io/distroless/cc-debian12 (glibc, libgcc_s, libstdc++ of Debian 12, like packages.lock)", base)
		}
		lock, err := os.Open(filepath.Join(root, "deploy", "image", "packages.lock"))
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Close()
		pkgs, err := readLock(lock, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range pkgs {
			names = append(names, p.name)
			if p.name == "libc6" && !strings.Contains(p.version, "deb12") {
				t.Errorf("packages.lock: libc6 %s is not Debian 12's, unlike the Dockerfile's base", p.version)
			}
		}
		for _, want := range []string{"libc6", "libgcc-s1", "libstdc++6", "ca-certificates"} {
			if !slices.Contains(names, want) {
				t.Errorf("packages.lock lacks %s, which distroless/cc-debian12 has", want)
			}
		}

		if got := find(final, "USER"); !slices.Equal(got, []string{imageUser}) {
			t.Errorf("USER %q, want %s", got, imageUser)
		}
		var entrypoint []string
		if eps := find(final, "ENTRYPOINT"); len(eps) != 1 || json.Unmarshal([]byte(eps[0]), &entrypoint) != nil {
			t.Fatalf("ENTRYPOINT %q: want one, in JSON form", eps)
		}
		if !slices.Equal(entrypoint, []string{binaryPath}) {
			t.Errorf("ENTRYPOINT %q, want [%s]", entrypoint, binaryPath)
		}
		if got := find(final, "COPY"); !slices.Equal(got, []string{"--from=build /out/trousseau " + binaryPath}) {
			t.Errorf("COPY %q: want the binary at %s", got, binaryPath)
		}

		labels := map[string]string{}
		for _, l := range find(final, "LABEL") {
			for _, m := range labelRE.FindAllStringSubmatch(l, -1) {
				labels[m[1]] = m[2]
			}
		}
		want := imageLabels(buildOptions{version: "${VERSION}", revision: "${REVISION}"})
		want[labelCreated] = "${CREATED}"
		if keys(labels) != keys(want) {
			t.Errorf("labels %s\nwant %s", keys(labels), keys(want))
		}
		for k, v := range want {
			if labels[k] != v {
				t.Errorf("LABEL %s=%q, want %q", k, labels[k], v)
			}
		}
		for _, arg := range find(final, "ARG") {
			if strings.HasPrefix(arg, "VERSION=") {
				t.Errorf("ARG %s: VERSION has no default (it comes from the VERSION file)", arg)
			}
		}
	})
}

func keys(m map[string]string) string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return strings.Join(k, " ")
}
