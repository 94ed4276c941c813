package pkcs11

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// maxPINFile bounds what is read of a PIN file: PINs are short.
const maxPINFile = 256

// readPIN reads the PIN from path, a regular file under
// [kmsclients.SecretFileMode]'s rule, dropping one trailing newline.
// Errors name the path, never the content; fs.ErrNotExist (not mounted
// yet) is kept for errors.Is.
func readPIN(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, pinFileError(path, err)
	}
	if err := checkPINFile(path, st); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, pinFileError(path, err)
	}
	defer f.Close()
	// Stat the open file too: the path may have been replaced meanwhile.
	if st, err = f.Stat(); err != nil {
		return nil, pinFileError(path, err)
	}
	if err := checkPINFile(path, st); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxPINFile+1))
	if err != nil {
		clear(raw)
		return nil, fmt.Errorf("PIN file %s: %w", path, err)
	}
	if len(raw) > maxPINFile {
		clear(raw)
		return nil, fmt.Errorf("PIN file %s holds more than %d bytes: want the user PIN alone", path, maxPINFile)
	}
	pin := raw
	if bytes.HasSuffix(pin, []byte("\r\n")) {
		pin = pin[:len(pin)-2]
	} else if bytes.HasSuffix(pin, []byte("\n")) {
		pin = pin[:len(pin)-1]
	}
	if len(pin) == 0 {
		clear(raw)
		return nil, fmt.Errorf("PIN file %s is empty", path)
	}
	return pin, nil
}

func checkPINFile(path string, st fs.FileInfo) error {
	switch bad := kmsclients.SecretFileMode(st.Mode().Perm()); {
	case st.IsDir():
		return fmt.Errorf("PIN file %s is a directory", path)
	case !st.Mode().IsRegular():
		return fmt.Errorf("PIN file %s is not a regular file (%s)", path, st.Mode().Type())
	case bad != "":
		return fmt.Errorf("PIN file %s %s", path, bad)
	}
	return nil
}

func pinFileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("PIN file %s: %w", path, err)
}
