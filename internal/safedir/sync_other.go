//go:build !linux

package safedir

import "golang.org/x/sys/unix"

// syncFS flushes every file system: there is no syncfs(2) here.
func syncFS(int) error {
	unix.Sync()
	return nil
}

// renameNoReplace is not to be had here: the caller checks, then renames.
func renameNoReplace(int, string, string) error { return unix.ENOSYS }
