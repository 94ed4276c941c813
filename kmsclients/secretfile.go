package kmsclients

import (
	"fmt"
	"io/fs"
)

// SecretFileMode is the rule for every file that holds a secret (a local
// key file, a PKCS#11 PIN file): others may neither read nor write it,
// and its group may not write it. It says what is wrong with perm, or "".
func SecretFileMode(perm fs.FileMode) string {
	if perm&0o006 != 0 || perm&0o020 != 0 {
		return fmt.Sprintf("has mode %04o; it must not be readable or writable by others (chmod 600)", perm)
	}
	return ""
}
