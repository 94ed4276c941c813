package safedir

import "golang.org/x/sys/unix"

// syncFS flushes the file system fd is on (syncfs(2)).
func syncFS(fd int) error { return unix.Syncfs(fd) }
