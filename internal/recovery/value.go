package recovery

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// What kube-apiserver writes in front of a stored value: its prefix
// transformers' prefixes (k8s.io/apiserver server/options/encryptionconfig)
// and the serializers' own magic.
const (
	encPrefix   = "k8s:enc:"
	kmsV2Prefix = "k8s:enc:kms:v2:"
	kmsV1Prefix = "k8s:enc:kms:v1:"
	// protobufMagic starts every object the protobuf serializer wrote.
	protobufMagic = "k8s\x00"
	// maxProviderName bounds the name read from an untrusted value.
	maxProviderName = 256
)

// ValueKind says what a stored etcd value is, from its first bytes.
type ValueKind int

// The kinds of stored values.
const (
	// ValueUnknown is none of the others: not something kube-apiserver wrote.
	ValueUnknown ValueKind = iota
	// ValueProtobuf is an object stored unencrypted, protobuf-encoded.
	ValueProtobuf
	// ValueJSON is an object stored unencrypted as JSON (custom resources).
	ValueJSON
	// ValueKMSv2 is k8s:enc:kms:v2:<provider>:<EncryptedObject>.
	ValueKMSv2
	// ValueKMSv1 is k8s:enc:kms:v1:<provider>:<len><DEK><data>.
	ValueKMSv1
	// ValueOtherEncryption is encrypted by another provider kind
	// (aescbc, aesgcm, secretbox).
	ValueOtherEncryption
)

func (k ValueKind) String() string {
	switch k {
	case ValueProtobuf:
		return "protobuf"
	case ValueJSON:
		return "json"
	case ValueKMSv2:
		return "kms-v2"
	case ValueKMSv1:
		return "kms-v1"
	case ValueOtherEncryption:
		return "other-encryption"
	}
	return "unknown"
}

// Value describes a stored value without decrypting it.
type Value struct {
	Kind ValueKind
	// Provider is the KMS provider name of a KMS value
	// (EncryptionConfiguration's kms.name).
	Provider string
	// Transformer names the encryption of a ValueOtherEncryption value,
	// e.g. "aescbc:v1".
	Transformer string
}

// ErrUnknownFormat reports a value that kube-apiserver did not write, or
// that lost its first bytes.
var ErrUnknownFormat = errors.New("unknown value format")

// ParseValue classifies a stored value by its prefix. It reads only the
// prefix; the rest is the transformers' business.
func ParseValue(b []byte) (Value, error) {
	switch {
	case bytes.HasPrefix(b, []byte(kmsV2Prefix)):
		return parseKMS(b, kmsV2Prefix, ValueKMSv2)
	case bytes.HasPrefix(b, []byte(kmsV1Prefix)):
		return parseKMS(b, kmsV1Prefix, ValueKMSv1)
	case bytes.HasPrefix(b, []byte(encPrefix)):
		// k8s:enc:<kind>:<version>:<key name>: (aescbc, aesgcm, secretbox).
		parts := bytes.SplitN(b[len(encPrefix):], []byte(":"), 3)
		if len(parts) < 3 || !printable(parts[0]) || !printable(parts[1]) || len(parts[0])+len(parts[1]) > 64 {
			return Value{}, fmt.Errorf("%w: a k8s:enc: prefix of no known transformer", ErrUnknownFormat)
		}
		return Value{Kind: ValueOtherEncryption, Transformer: string(parts[0]) + ":" + string(parts[1])}, nil
	case bytes.HasPrefix(b, []byte(protobufMagic)):
		return Value{Kind: ValueProtobuf}, nil
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return Value{Kind: ValueJSON}, nil
	}
	if len(b) == 0 {
		return Value{}, fmt.Errorf("%w: empty value", ErrUnknownFormat)
	}
	return Value{}, fmt.Errorf("%w: not a Kubernetes object nor a k8s:enc: value", ErrUnknownFormat)
}

func parseKMS(b []byte, prefix string, kind ValueKind) (Value, error) {
	rest := b[len(prefix):]
	end := bytes.IndexByte(rest, ':')
	if end < 0 || end > maxProviderName {
		return Value{}, fmt.Errorf("%w: %sprefix without a provider name", ErrUnknownFormat, prefix)
	}
	name := rest[:end]
	if end == 0 || !printable(name) {
		return Value{}, fmt.Errorf("%w: %sprefix with an invalid provider name", ErrUnknownFormat, prefix)
	}
	return Value{Kind: kind, Provider: string(name)}, nil
}

// printable reports whether b is visible ASCII without '/'.
func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' || c == '/' {
			return false
		}
	}
	return true
}

// Key is an etcd key of kube-apiserver's storage, split into its parts:
// <prefix>/[<group>/]<resource>/[<namespace>/]<name>.
type Key struct {
	Group     string // "" for resources stored without a group directory
	Resource  string // e.g. "secrets", or "services/specs"
	Namespace string // "" for cluster-scoped objects
	Name      string
}

// GroupResource is the resource as kubectl writes it: "secrets",
// "widgets.example.com".
func (k Key) GroupResource() string {
	if k.Group == "" {
		return k.Resource
	}
	return k.Resource + "." + k.Group
}

// DefaultPrefix is kube-apiserver's default --etcd-prefix.
const DefaultPrefix = "/registry"

// ParseKey splits an etcd key under prefix (e.g. "/registry"). Keys have
// no type information: a first segment with a dot is a group (custom and
// aggregated resources), the last segment is the name, and the one before
// it the namespace when the key has room for one. The decoded object's
// metadata is checked against what this returns.
func ParseKey(prefix, key string) (Key, error) {
	rest, ok := strings.CutPrefix(key, normalizePrefix(prefix))
	if !ok {
		return Key{}, fmt.Errorf("key is not under %s", normalizePrefix(prefix))
	}
	segs := strings.Split(rest, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || strings.IndexByte(s, 0) >= 0 {
			return Key{}, errors.New("key has an empty, dot or NUL segment")
		}
	}
	var k Key
	if strings.Contains(segs[0], ".") && len(segs) >= 3 {
		k.Group, segs = segs[0], segs[1:]
	}
	switch len(segs) {
	case 1:
		return Key{}, errors.New("key has no object name")
	case 2:
		k.Resource, k.Name = segs[0], segs[1]
	default:
		k.Resource = strings.Join(segs[:len(segs)-2], "/")
		k.Namespace, k.Name = segs[len(segs)-2], segs[len(segs)-1]
	}
	return k, nil
}

// normalizePrefix turns "/registry", "/registry/" or "registry" into
// "/registry/".
func normalizePrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return "/"
	}
	return "/" + p + "/"
}
