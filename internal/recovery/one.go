package recovery

import (
	"context"
	"errors"
	"fmt"
)

// DecryptValue decrypts one stored etcd value, for support cases: key is
// its etcd key (the authenticated data of its encryption), prefix the
// apiserver's --etcd-prefix. It returns the decrypted bytes and the
// object they hold, stripped of server-managed fields; the object is nil
// (with an error) when the bytes do not decode.
func DecryptValue(ctx context.Context, env Envelope, prefix, provider, key string, stored []byte) (plain []byte, obj Object, err error) {
	if err := checkFIPS(); err != nil {
		return nil, nil, err
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	plain, err = NewDecrypter(ctx, env, DecrypterOptions{Provider: provider}).Decrypt(ctx, key, stored)
	switch {
	case errors.Is(err, ErrNotEncrypted):
		return nil, nil, fmt.Errorf("%s: the value is stored unencrypted", key)
	case err != nil:
		return nil, nil, fmt.Errorf("%s: %w", key, err)
	}
	k, err := ParseKey(prefix, key)
	if err != nil {
		return plain, nil, fmt.Errorf("%s: %w", key, err)
	}
	obj, err = decodeObject(plain)
	if err == nil {
		err = obj.prepare(k, false)
	}
	if err != nil {
		return plain, nil, fmt.Errorf("%s: %w", key, err)
	}
	return plain, obj, nil
}

// Render writes the object as YAML or JSON.
func (o Object) Render(f Format) ([]byte, error) { return o.render(f) }
