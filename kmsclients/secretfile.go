package kmsclients

import (
	"fmt"
	"io/fs"
)

// SecretFileMode says what is wrong with a secret file's perm (key file,
// PIN file), or "": no access for others, no write for group.
func SecretFileMode(perm fs.FileMode) string {
	if perm&0o006 != 0 || perm&0o020 != 0 {
		return fmt.Sprintf("has mode %04o; it must not be readable or writable by others (chmod 600)", perm)
	}
	return ""
}
