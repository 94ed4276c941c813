package envelope

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Inode flags (linux/fs.h) that stop a file from being renamed over.
const (
	fsImmutableFlag = 0x10 // FS_IMMUTABLE_FL
	fsAppendFlag    = 0x20 // FS_APPEND_FL
)

// undeletable names the flag that keeps path from being replaced, or "".
func undeletable(path string) string {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	switch {
	case err != nil:
		return ""
	case flags&fsImmutableFlag != 0:
		return "immutable"
	case flags&fsAppendFlag != 0:
		return "append-only"
	}
	return ""
}
