package safedir

import "golang.org/x/sys/unix"

// maxOpenDirs bounds the directory handles a [PrivateDir] keeps open.
const maxOpenDirs = 128

// dirCache keeps checked directory handles by path, so that writing many
// files into one directory opens and checks it once, not per file. Past
// maxOpenDirs it closes one at random: the order objects come in mixes
// directories, which no eviction order would predict.
type dirCache struct{ fds map[string]int }

func (c *dirCache) get(rel string) (int, bool) {
	fd, ok := c.fds[rel]
	return fd, ok
}

func (c *dirCache) put(rel string, fd int) {
	if c.fds == nil {
		c.fds = map[string]int{}
	}
	for k, old := range c.fds {
		if len(c.fds) < maxOpenDirs {
			break
		}
		unix.Close(old)
		delete(c.fds, k)
	}
	c.fds[rel] = fd
}

func (c *dirCache) closeAll() {
	for k, fd := range c.fds {
		unix.Close(fd)
		delete(c.fds, k)
	}
}
