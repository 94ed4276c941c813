package recovery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// A Sink receives recovered objects, rendered, one call at a time, in
// key order.
type Sink interface {
	Format() Format
	Put(k Key, rendered []byte) error
	Close() error
}

// clusterScopedDir holds cluster-scoped objects in an output directory;
// no namespace can be named so (namespace names are DNS labels).
const clusterScopedDir = "_cluster"

// DirSink writes one manifest per object to
// DIR/<namespace>/<resource>/<name>.<format>, directories 0700, files
// 0600. Paths cannot leave DIR: every part is checked, and files are
// created through an os.Root.
type DirSink struct {
	format Format
	dir    string
	root   *os.Root
}

// NewDirSink checks dir: an existing one must be a directory not open to
// others, since manifests of Secrets land in it; a new one must have a
// parent. It creates dir (0700) only at the first object, or at Close,
// so that a run that cannot read its source leaves nothing behind.
func NewDirSink(dir string, f Format) (*DirSink, error) {
	if err := checkOutputDir(dir); err != nil {
		return nil, err
	}
	return &DirSink{format: f, dir: dir}, nil
}

func checkOutputDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(dir)
		if st, err = os.Stat(parent); err == nil && !st.IsDir() {
			err = errors.New("not a directory")
		}
		if err != nil {
			return fmt.Errorf("output directory %s: cannot be created in %s: %w", dir, parent, unwrapPathError(err))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("output directory %s: not a directory", dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("output directory %s has mode %04o: others could read the recovered Secrets; use a new directory or chmod 0700 it", dir, st.Mode().Perm())
	}
	return nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// open creates the directory, once.
func (d *DirSink) open() error {
	if d.root != nil {
		return nil
	}
	if err := os.Mkdir(d.dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("output directory: %w", err)
	}
	// Check again: the directory may have changed since NewDirSink.
	if err := checkOutputDir(d.dir); err != nil {
		return err
	}
	root, err := os.OpenRoot(d.dir)
	if err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	d.root = root
	return nil
}

// Format implements Sink.
func (d *DirSink) Format() Format { return d.format }

// PathOf is where an object's manifest goes, relative to the directory.
func PathOf(k Key, f Format) (string, error) {
	ns := k.Namespace
	if ns == "" {
		ns = clusterScopedDir
	}
	// A resource path such as "services/specs" becomes one directory.
	res := strings.ReplaceAll(k.GroupResource(), "/", "_")
	for _, part := range []string{ns, res, k.Name} {
		if part == "" || part == "." || part == ".." || strings.ContainsAny(part, "/\x00") {
			return "", fmt.Errorf("cannot make a file name of %q", part)
		}
	}
	return path.Join(ns, res, k.Name+"."+string(f)), nil
}

// Put implements Sink.
func (d *DirSink) Put(k Key, rendered []byte) error {
	p, err := PathOf(k, d.format)
	if err != nil {
		return err
	}
	if err := d.open(); err != nil {
		return err
	}
	if err := d.root.MkdirAll(path.Dir(p), 0o700); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	f, err := d.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	// A file left by an earlier run keeps its mode through O_TRUNC.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("output: %w", err)
	}
	if _, err := f.Write(rendered); err != nil {
		f.Close()
		return fmt.Errorf("output: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return nil
}

// Close implements Sink. A run that wrote nothing still leaves the
// (empty) directory, as the operator asked for it.
func (d *DirSink) Close() error {
	if err := d.open(); err != nil {
		return err
	}
	return d.root.Close()
}

// StreamSink writes every object to one stream: YAML documents separated
// by "---", or one JSON List; both are input for kubectl apply -f -.
type StreamSink struct {
	w      io.Writer
	format Format
	n      int
	err    error
}

// NewStreamSink writes to w.
func NewStreamSink(w io.Writer, f Format) *StreamSink {
	return &StreamSink{w: w, format: f}
}

// Format implements Sink.
func (s *StreamSink) Format() Format { return s.format }

// Put implements Sink.
func (s *StreamSink) Put(_ Key, rendered []byte) error {
	if s.err != nil {
		return s.err
	}
	var b bytes.Buffer
	switch {
	case s.format == JSON && s.n == 0:
		b.WriteString("{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [\n")
	case s.format == JSON:
		b.WriteString(",\n")
	case s.n > 0:
		b.WriteString("---\n")
	}
	if s.format == JSON {
		// Indent the item inside the list.
		b.WriteString("    ")
		b.Write(bytes.ReplaceAll(bytes.TrimRight(rendered, "\n"), []byte("\n"), []byte("\n    ")))
	} else {
		b.Write(rendered)
	}
	s.n++
	_, s.err = s.w.Write(b.Bytes())
	return s.err
}

// Close implements Sink: it ends the JSON list.
func (s *StreamSink) Close() error {
	if s.err != nil || s.format != JSON {
		return s.err
	}
	end := "\n  ]\n}\n"
	if s.n == 0 {
		end = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": []\n}\n"
	}
	_, s.err = io.WriteString(s.w, end)
	return s.err
}
