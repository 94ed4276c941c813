package recovery

// NewDirSinkOwnedBy is NewDirSink for a run as uid: a test that is not
// root makes its own files another user's by passing another uid.
func NewDirSinkOwnedBy(dir string, f Format, uid int) (*DirSink, error) {
	return newDirSink(dir, f, uid)
}
