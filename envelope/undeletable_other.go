//go:build !linux

package envelope

// undeletable: inode flags are read on Linux only.
func undeletable(string) string { return "" }
