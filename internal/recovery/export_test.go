package recovery

// NewDirSinkOwnedBy is NewDirSink for a run as uid: a test that is not
// root makes its own files another user's by passing another uid.
func NewDirSinkOwnedBy(dir string, f Format, uid int) (*DirSink, error) {
	return newDirSink(dir, f, uid)
}

// FlushEvery sets how many bytes d writes between two flushes.
func (d *DirSink) FlushEvery(n int64) { d.flushEvery = n }

// Flushes is how many flushes d made before Close's last one.
func (d *DirSink) Flushes() int64 { return d.flushCount.Load() }
