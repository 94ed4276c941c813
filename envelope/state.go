package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/trousseau-io/trousseau/internal/filelock"
	"github.com/trousseau-io/trousseau/internal/safedir"
)

// The state file keeps the wrapped current DEK: a restart keeps its key_id
// and needs only k backends.
const (
	stateFileName = "state.json"
	stateVersion  = 1
)

type stateDoc struct {
	Version   int       `json:"version"`
	KeyID     string    `json:"keyID"` // for people; derived from the header
	Header    []byte    `json:"header"`
	RotatedAt time.Time `json:"rotatedAt"`
	// Previous: earlier current DEKs, newest first, so that a drill
	// without etcd checks them all. Older readers ignore it.
	Previous [][]byte `json:"previous,omitempty"`
}

// Bounds of the history kept in the state file.
const (
	maxPrevious      = 32
	maxPreviousBytes = 256 << 10
	maxStateSize     = 1 << 20 // the header (at most 32 KiB), the history, JSON's base64
)

type stateFile struct{ dir string }

// moveAside tells an operator what to do with an unreadable state file.
const moveAside = "move it aside and restart to make a new DEK (this loses no data: every object in etcd carries its own copy of its wrapped DEK), or restore it from a backup to keep the key_id"

// StateLock is the lock file of the state dir dir.
func StateLock(dir string) string { return filepath.Join(dir, ".lock") }

// LockStateDir keeps two plugins off one state dir (they would overwrite
// each other's DEK); closing the file releases it. A dir others could
// write is refused first: the lock file in it could be theirs.
func LockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if err := checkStateDir(dir); err != nil {
		return nil, err
	}
	f, err := filelock.Acquire(StateLock(dir))
	if errors.Is(err, filelock.ErrHeld) {
		return nil, fmt.Errorf("state dir %s is in use by another Trousseau (%w); give each instance a state dir of its own", dir, err)
	}
	return f, err
}

// removeLeftovers deletes temporary files of saves a crash interrupted.
func (s *stateFile) removeLeftovers(log *slog.Logger) {
	names, _ := filepath.Glob(filepath.Join(s.dir, ".state-*.tmp"))
	for _, n := range names {
		if os.Remove(n) == nil {
			log.Info("removed a temporary state file left by an interrupted save", "file", n)
		}
	}
}

func (s *stateFile) path() string { return filepath.Join(s.dir, stateFileName) }

// load returns the stored header, nil when there is none. It removes
// leftovers of interrupted saves and makes a state file others can read
// 0600 again.
func (s *stateFile) load(log *slog.Logger) ([]byte, error) {
	if err := checkStateDir(s.dir); err != nil {
		return nil, err
	}
	s.removeLeftovers(log)
	b, err := readNoFollow(s.path(), func(f *os.File, st fs.FileInfo) error {
		if st.Mode().Perm()&0o077 == 0 {
			return nil
		}
		log.Warn("state file was readable or writable by others; made it 0600", "file", s.path(), "mode", st.Mode().Perm().String())
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("state file %s has mode %s and cannot be made 0600: %w", s.path(), st.Mode().Perm(), err)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	_, raw, err := parseState(s.path(), b)
	return raw, err
}

// save replaces the state atomically: a crash leaves old or new, never a mix.
func (s *stateFile) save(header []byte, keyID string, now time.Time) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.MarshalIndent(stateDoc{Version: stateVersion, KeyID: keyID, Header: header, RotatedAt: now.UTC(), Previous: s.history(header)}, "", "  ")
	if err != nil {
		return err
	}
	return s.replace(s.path(), b)
}

// replace writes b to path atomically: a crash leaves old or new, never a
// mix. Errors name path, not the temporary file, so that the same cause
// reads the same (the prober logs once per cause).
func (s *stateFile) replace(path string, b []byte) error {
	fail := func(op string, err error) error {
		var pe *fs.PathError
		var le *os.LinkError
		switch {
		case errors.As(err, &pe):
			err = pe.Err
		case errors.As(err, &le):
			err = le.Err
		}
		return fmt.Errorf("%s state file %s: %w", op, path, err)
	}
	tmp, err := os.CreateTemp(s.dir, ".state-*.tmp") // mode 0600
	if err != nil {
		return fail("write", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this finds nothing
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fail("write", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fail("sync", err)
	}
	if err := tmp.Close(); err != nil {
		return fail("write", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fail("replace", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// history is the Previous list for a state of header: the stored header,
// then its history, without header, within the bounds; none if unreadable.
func (s *stateFile) history(header []byte) [][]byte {
	b, err := readNoFollow(s.path(), nil)
	if err != nil {
		return nil
	}
	var old stateDoc
	if json.Unmarshal(b, &old) != nil {
		return nil
	}
	var out [][]byte
	size := 0
	for _, h := range append([][]byte{old.Header}, old.Previous...) {
		if len(h) == 0 || bytes.Equal(h, header) || slices.ContainsFunc(out, func(o []byte) bool { return bytes.Equal(o, h) }) {
			continue
		}
		if len(out) == maxPrevious || size+len(h) > maxPreviousBytes {
			break
		}
		out, size = append(out, h), size+len(h)
	}
	return out
}

// previous returns the earlier headers, newest first; none if unreadable.
func (s *stateFile) previous() [][]byte {
	b, err := readNoFollow(s.path(), nil)
	if err != nil {
		return nil
	}
	var doc stateDoc
	if json.Unmarshal(b, &doc) != nil {
		return nil
	}
	return doc.Previous[:min(len(doc.Previous), maxPrevious)]
}

// setAside copies the state file to state.json.unusable-<time>-<random>
// and returns its path; an identical earlier copy is reused. The random
// suffix (O_EXCL) means a name planted there, a symlink say, is never
// written through.
func (s *stateFile) setAside(now time.Time) (string, error) {
	b, err := readNoFollow(s.path(), nil)
	if err != nil {
		return "", err
	}
	earlier, _ := filepath.Glob(s.path() + ".unusable-*")
	for _, name := range earlier {
		if c, err := readNoFollow(name, nil); err == nil && bytes.Equal(c, b) {
			return name, nil
		}
	}
	f, err := os.CreateTemp(s.dir, fmt.Sprintf("%s.unusable-%s-*", stateFileName, now.UTC().Format("20060102T150405Z")))
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return "", err
	}
	return f.Name(), f.Sync()
}

// readNoFollow reads a regular file, not a symlink: a state-dir writer
// must not make the plugin read, chmod or reveal another file. check, if
// set, sees the open file first.
func readNoFollow(path string, check func(*os.File, fs.FileInfo) error) ([]byte, error) {
	// O_NONBLOCK: a planted FIFO must not hang the open.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("state file %s is a symlink; the state dir must hold the file itself", path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("state file %s is not a regular file", path)
	}
	if check != nil {
		if err := check(f, st); err != nil {
			return nil, err
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err == nil && len(b) > maxStateSize {
		return nil, fmt.Errorf("state file %s is larger than %d bytes", path, maxStateSize)
	}
	return b, err
}

// checkStateDir refuses a state dir someone else could write (and plant
// a state file or links in): owned by another user than us or root, or
// group- or world-writable.
func checkStateDir(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil // save creates it, 0700
	}
	return safedir.Check("state dir", dir, true)
}

// all is [StateHeaders]; it changes nothing in the state dir.
func (s *stateFile) all() (headers [][]byte, files []string, err error) {
	aside, _ := filepath.Glob(s.path() + ".unusable-*")
	slices.Sort(aside)
	slices.Reverse(aside)
	for _, name := range append([]string{s.path()}, aside...) {
		b, err := readNoFollow(name, nil)
		if errors.Is(err, fs.ErrNotExist) && name == s.path() {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read state: %w", err)
		}
		var doc stateDoc
		if err := json.Unmarshal(b, &doc); err != nil || len(doc.Header) == 0 {
			return nil, nil, fmt.Errorf("state file %s holds no DEK header", name)
		}
		add := func(h []byte, from string) {
			if !slices.ContainsFunc(headers, func(o []byte) bool { return bytes.Equal(o, h) }) {
				headers, files = append(headers, h), append(files, from)
			}
		}
		add(doc.Header, name)
		for i, h := range doc.Previous[:min(len(doc.Previous), maxPrevious)] {
			add(h, fmt.Sprintf("%s (previous DEK %d)", name, i+1))
		}
	}
	return headers, files, nil
}

// The candidate file keeps a newer DEK another node made that this node
// saw but has not adopted yet, so that a restart does not forget it:
// kube-apiserver caches what it decrypted and may never ask again. It is
// only a hint: at start its DEK is opened again from k secret-key
// backends before it can be adopted.
const candidateFileName = "candidate.json"

type candidateDoc struct {
	Version int    `json:"version"`
	KeyID   string `json:"keyID"` // for people
	Header  []byte `json:"header"`
}

func (s *stateFile) candidatePath() string { return filepath.Join(s.dir, candidateFileName) }

func (s *stateFile) saveCandidate(header []byte, keyID string) error {
	b, err := json.MarshalIndent(candidateDoc{Version: stateVersion, KeyID: keyID, Header: header}, "", "  ")
	if err != nil {
		return err
	}
	return s.replace(s.candidatePath(), b)
}

// loadCandidate returns the stored candidate, nil if there is none. One
// that cannot be read is removed: it is a hint, and losing it loses no data.
func (s *stateFile) loadCandidate(log *slog.Logger) ([]byte, *Header) {
	b, err := readNoFollow(s.candidatePath(), nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var doc candidateDoc
	if err == nil {
		err = json.Unmarshal(b, &doc)
	}
	var h *Header
	if err == nil && doc.Version != stateVersion {
		err = fmt.Errorf("version %d, this build reads %d", doc.Version, stateVersion)
	}
	if err == nil {
		h, err = ParseHeader(doc.Header)
	}
	if err != nil {
		log.Warn("removed an unreadable record of a DEK to adopt; this node adopts it when it next decrypts an object under it", "file", s.candidatePath(), "error", err)
		s.dropCandidate()
		return nil, nil
	}
	return doc.Header, h
}

func (s *stateFile) dropCandidate() {
	if err := os.Remove(s.candidatePath()); err == nil {
		if d, err := os.Open(s.dir); err == nil {
			d.Sync()
			d.Close()
		}
	}
}
