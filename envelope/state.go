package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The state file keeps the wrapped current DEK, so that a restarted plugin
// has the same key id and needs only k backends. It holds nothing that
// helps without a quorum of backends.
const (
	stateFileName = "state.json"
	stateVersion  = 1
)

type stateDoc struct {
	Version   int       `json:"version"`
	KeyID     string    `json:"keyID"` // for people reading the file; derived from the header
	Header    []byte    `json:"header"`
	RotatedAt time.Time `json:"rotatedAt"`
}

type stateFile struct{ dir string }

func (s *stateFile) path() string { return filepath.Join(s.dir, stateFileName) }

// load returns the stored header, or nil when there is no state yet.
func (s *stateFile) load() ([]byte, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt: %w", s.path(), err)
	}
	if doc.Version != stateVersion {
		return nil, fmt.Errorf("state file %s has version %d, this build reads %d", s.path(), doc.Version, stateVersion)
	}
	if len(doc.Header) == 0 {
		// Starting over would change the key id; an operator must decide.
		return nil, fmt.Errorf("state file %s is corrupt: it holds no DEK header (move it away to start with a new DEK)", s.path())
	}
	return doc.Header, nil
}

// save replaces the state atomically: a crash leaves the old file or the
// new one, never a mix.
func (s *stateFile) save(header []byte, keyID string, now time.Time) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.MarshalIndent(stateDoc{Version: stateVersion, KeyID: keyID, Header: header, RotatedAt: now.UTC()}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".state-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this finds nothing
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path()); err != nil {
		return fmt.Errorf("replace state: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// setAside copies the state file to state.json.unusable-<time>, so that a
// DEK that cannot be unlocked now is not forgotten, and returns its path.
func (s *stateFile) setAside(now time.Time) (string, error) {
	b, err := os.ReadFile(s.path())
	if err != nil {
		return "", err
	}
	aside := fmt.Sprintf("%s.unusable-%s", s.path(), now.UTC().Format("20060102T150405Z"))
	if err := os.WriteFile(aside, b, 0o600); err != nil {
		return "", err
	}
	return aside, nil
}
