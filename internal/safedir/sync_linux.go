package safedir

import "golang.org/x/sys/unix"

// syncFS flushes the file system fd is on (syncfs(2)).
func syncFS(fd int) error { return unix.Syncfs(fd) }

// renameNoReplace renames from to to in dir unless to exists (EEXIST).
func renameNoReplace(dir int, from, to string) error {
	return unix.Renameat2(dir, from, dir, to, unix.RENAME_NOREPLACE)
}
