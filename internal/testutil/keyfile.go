package testutil

import "os"

// KeyFileSpoiler is one way to spoil a local key file, and what the
// backend's error must then say after the file's path.
type KeyFileSpoiler struct {
	Name  string
	Spoil func(path string) error
	Want  string
}

// SpoiledKeyFiles are the ways a key file can be there and unusable: open
// to others, not a key, a directory.
var SpoiledKeyFiles = []KeyFileSpoiler{
	{"world-readable", func(p string) error { return os.Chmod(p, 0o644) }, "has mode 0644"},
	{"garbage", func(p string) error { return os.WriteFile(p, []byte("garbage!\n"), 0o600) }, "holds 9 bytes, want 32 raw bytes or their base64"},
	{"directory", func(p string) error {
		if err := os.Remove(p); err != nil {
			return err
		}
		return os.Mkdir(p, 0o700)
	}, "is a directory"},
}
