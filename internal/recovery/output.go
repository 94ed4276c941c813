package recovery

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/trousseau-io/trousseau/internal/safedir"
	"github.com/trousseau-io/trousseau/internal/safetext"
)

// A Sink receives recovered objects, rendered, one call at a time, in
// the order the source read them (a snapshot's is the order of their
// last writes; a live etcd's is key order).
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
// 0600, through a [safedir.PrivateDir]: nothing of another user's, no
// symlink and no hard-linked file is written into. Paths cannot leave
// DIR: every part is checked. Files that no other key can make are
// written from the decrypting goroutines ([DirSink.PutUnordered]), the
// others in the order read.
type DirSink struct {
	format Format
	dir    string
	uid    int
	// idle holds the handles not in use: a PrivateDir is used by one
	// goroutine at a time, and keeps the directories it opened open.
	idle    chan *safedir.PrivateDir
	mu      sync.Mutex // guards handles and closed
	handles []*safedir.PrivateDir
	closed  bool
	written map[string]Key // paths that two keys can share; see [sharable]

	// The flusher makes what was written durable while the run goes on.
	flushEvery int64        // bytes between flushes: flushEvery, tests less
	unflushed  atomic.Int64 // bytes written since the flusher was last woken
	flushes    chan struct{}
	flushed    chan error // the flusher's first error, once flushes is closed
	flushCount atomic.Int64
}

// dirHandles bounds the files written at once.
const dirHandles = 4

// NewDirSink checks dir: an existing one must be a directory of ours
// (not a symlink) not open to others, since manifests of Secrets land in
// it; a new one must have a parent. It creates dir (0700) only at the
// first object, or at Close, so that a run that cannot read its source
// leaves nothing behind.
func NewDirSink(dir string, f Format) (*DirSink, error) {
	return newDirSink(dir, f, os.Geteuid())
}

// newDirSink takes the uid whose files are ours: tests pass another.
func newDirSink(dir string, f Format, uid int) (*DirSink, error) {
	d := &DirSink{format: f, dir: dir, uid: uid, written: map[string]Key{}, idle: make(chan *safedir.PrivateDir, dirHandles), flushEvery: flushEvery}
	root, err := safedir.OpenPrivate(dir, uid, false)
	if err == nil {
		return d, root.Close()
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("output directory %w", err)
	}
	parent := filepath.Dir(dir)
	st, err := os.Stat(parent)
	if err == nil && !st.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		return nil, fmt.Errorf("output directory %s: cannot be created in %s: %w", dir, parent, unwrapPathError(err))
	}
	return d, nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// acquire returns a handle of the directory for one goroutine's use
// until release. The first creates the directory; each opens and checks
// it again: it may have changed since NewDirSink.
func (d *DirSink) acquire() (*safedir.PrivateDir, error) {
	select {
	case h := <-d.idle:
		return h, nil
	default:
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.handles) == dirHandles {
		return <-d.idle, nil
	}
	h, err := safedir.OpenPrivate(d.dir, d.uid, true)
	if err != nil {
		return nil, fmt.Errorf("output directory %w", err)
	}
	if len(d.handles) == 0 {
		if err := d.startFlusher(); err != nil {
			h.Close()
			return nil, err
		}
	}
	d.handles = append(d.handles, h)
	return h, nil
}

func (d *DirSink) release(h *safedir.PrivateDir) { d.idle <- h }

// write writes the file at p.
func (d *DirSink) write(p string, rendered []byte) error {
	h, err := d.acquire()
	if err != nil {
		return err
	}
	defer d.release(h)
	if err := h.WriteFile(p, rendered); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if d.unflushed.Add(int64(len(rendered))) >= d.flushEvery {
		d.unflushed.Store(0)
		select {
		case d.flushes <- struct{}{}:
		default: // a flush is under way
		}
	}
	return nil
}

// flushEvery is how many bytes of manifests are written between two
// flushes while a run goes on: the disk writes them while the next
// objects are decrypted, so that Close waits for the last ones only,
// not for a whole snapshot's files at once, and dirty pages do not pile
// up until the kernel throttles the writers.
const flushEvery = 16 << 20

// startFlusher starts the goroutine that flushes the directory's file
// system each time write asks, until Close, through a handle of its
// own. A flush that fails is reported by Close.
func (d *DirSink) startFlusher() error {
	h, err := safedir.OpenPrivate(d.dir, d.uid, false)
	if err != nil {
		return fmt.Errorf("output directory %w", err)
	}
	d.flushes, d.flushed = make(chan struct{}, 1), make(chan error, 1)
	go func() {
		var first error
		for range d.flushes {
			if err := h.Sync(); first == nil {
				first = err
			}
			d.flushCount.Add(1)
		}
		d.flushed <- errors.Join(first, h.Close())
	}()
	return nil
}

// Format implements Sink.
func (d *DirSink) Format() Format { return d.format }

// PathOf is where an object's manifest goes, relative to the directory.
// A name that is no file name, or that holds what a terminal acts on
// (it could not be listed safely), has none.
func PathOf(k Key, f Format) (string, error) {
	ns := k.Namespace
	if ns == "" {
		ns = clusterScopedDir
	}
	// A resource path such as "services/specs" becomes one directory.
	res := strings.ReplaceAll(k.GroupResource(), "/", "_")
	for _, part := range []string{ns, res, k.Name} {
		if part == "" || part == "." || part == ".." || strings.Contains(part, "/") || !safetext.Printable(part) {
			return "", fmt.Errorf("cannot make a file name of %q: recover this object with -o yaml or -o json", part)
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
	if first, ok := d.written[p]; ok {
		return fmt.Errorf("output: %s is already the file of %s/%s/%s (two etcd keys make one file name); recover this object with -o yaml or -o json", p, first.GroupResource(), first.Namespace, first.Name)
	}
	if err := d.write(p, rendered); err != nil {
		return err
	}
	if sharable(p) {
		d.written[p] = k
	}
	return nil
}

// PutUnordered implements [UnorderedSink]: it writes the files that no
// other key can make, from any goroutine; Put gets the others.
func (d *DirSink) PutUnordered(k Key, rendered []byte) (bool, error) {
	p, err := PathOf(k, d.format)
	if err != nil || sharable(p) {
		return false, nil
	}
	return true, d.write(p, rendered)
}

// sharable reports whether another key could make the path p: etcd keys
// are distinct, so two make one path only where PathOf wrote "_" for
// one ("/" in a resource, no namespace) and the other holds a "_" at
// the same place. Names take no part, so a path without "_" before its
// name is one key's alone, and need not be remembered.
func sharable(p string) bool {
	return strings.Contains(path.Dir(p), "_")
}

// Close implements Sink: it makes the files durable. A run that wrote
// nothing still leaves the (empty) directory, as the operator asked for
// it. Closing again does nothing.
func (d *DirSink) Close() error {
	if d.isClosed() {
		return nil
	}
	h, err := d.acquire()
	if err != nil {
		return errors.Join(err, d.end())
	}
	err = h.Sync()
	d.release(h)
	return errors.Join(err, d.end())
}

// Abort ends a run whose source failed part way: what was written is
// made durable, but a directory nothing was written to is not made.
func (d *DirSink) Abort() error {
	d.mu.Lock()
	made := len(d.handles) > 0
	d.mu.Unlock()
	if !made {
		return d.end()
	}
	return d.Close()
}

func (d *DirSink) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// end stops the flusher and closes the handles, once.
func (d *DirSink) end() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	if d.flushes != nil {
		close(d.flushes)
		errs = append(errs, <-d.flushed)
	}
	for _, h := range d.handles {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}

// UnorderedSink is a Sink that can take some objects out of order, from
// several goroutines at once, as soon as they are rendered.
type UnorderedSink interface {
	Sink
	// PutUnordered writes an object, or reports false to have it passed
	// to Put, in order.
	PutUnordered(k Key, rendered []byte) (bool, error)
}

// StreamSink writes every object to one stream: YAML documents separated
// by "---", or one JSON List; both are input for kubectl apply -f -.
// Output is buffered (a write per object cost more than its YAML) and
// flushed at Close.
type StreamSink struct {
	w      *bufio.Writer
	format Format
	n      int
	err    error
}

// streamBuffer is the size of a StreamSink's buffer.
const streamBuffer = 64 << 10

// NewStreamSink writes to w.
func NewStreamSink(w io.Writer, f Format) *StreamSink {
	return &StreamSink{w: bufio.NewWriterSize(w, streamBuffer), format: f}
}

// Format implements Sink.
func (s *StreamSink) Format() Format { return s.format }

// Put implements Sink.
func (s *StreamSink) Put(_ Key, rendered []byte) error {
	if s.err != nil {
		return s.err
	}
	switch {
	case s.format == JSON && s.n == 0:
		s.w.WriteString("{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [\n")
	case s.format == JSON:
		s.w.WriteString(",\n")
	case s.n > 0:
		s.w.WriteString("---\n")
	}
	if s.format == JSON {
		// Indent the item inside the list.
		s.w.WriteString("    ")
		s.w.Write(bytes.ReplaceAll(bytes.TrimRight(rendered, "\n"), []byte("\n"), []byte("\n    ")))
	} else {
		s.w.Write(rendered)
	}
	s.n++
	// A bufio.Writer keeps its first error and returns it from every call.
	_, s.err = s.w.Write(nil)
	return s.err
}

// Close implements Sink: it ends the JSON list and flushes.
func (s *StreamSink) Close() error {
	if s.err != nil {
		return s.err
	}
	if s.format == JSON {
		end := "\n  ]\n}\n"
		if s.n == 0 {
			end = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": []\n}\n"
		}
		s.w.WriteString(end)
	}
	s.err = s.w.Flush()
	return s.err
}
