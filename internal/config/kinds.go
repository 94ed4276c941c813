package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/awskms"
	"github.com/trousseau-io/trousseau/kmsclients/azurekv"
	"github.com/trousseau-io/trousseau/kmsclients/gcpkms"
	"github.com/trousseau-io/trousseau/kmsclients/kmsplugin"
	"github.com/trousseau-io/trousseau/kmsclients/local"
	"github.com/trousseau-io/trousseau/kmsclients/pkcs11"
	"github.com/trousseau-io/trousseau/kmsclients/vault"
)

// kinds is every backend kind, in the order messages list them. A kind is
// its YAML name and its package's New; the config type is what New takes,
// and its Validate method is the kind's validation. Everything else about
// kinds (the YAML fields of a backend, their strict checks, the list in
// messages, building) is derived from this table. Adding a kind is a
// package, a line here and a docs/backends/<kind>.md page (see "Adding a
// backend" in docs/development.md; TestEveryKindIsComplete checks it).
var kinds = []kind{
	kindOf("local", local.New),
	kindOf("vault", vault.New),
	kindOf("awskms", awskms.New),
	kindOf("azurekv", azurekv.New),
	kindOf("kmsplugin", kmsplugin.New),
	kindOf("gcpkms", gcpkms.New),
	kindOf("pkcs11", pkcs11.New),
}

// Spec is a backend kind's config block: a pointer to the config type of
// one of the kinds (*local.Config for `local: {...}`, *vault.Config, ...).
type Spec interface {
	// Validate names the field at fault ("vault.keyName: required").
	Validate() error
}

// kind is one entry of the table.
type kind struct {
	name  string       // the YAML key of the kind's block
	typ   reflect.Type // its config type (local.Config); a Spec is a *typ
	build func(ctx context.Context, name string, spec Spec) (kmsclients.Backend, error)
}

// kindOf makes the table entry of a kind from its New, which every
// backend package has with this signature.
func kindOf[C any, PC interface {
	*C
	Spec
}, B kmsclients.Backend](name string, newBackend func(context.Context, string, C) (B, error)) kind {
	return kind{
		name: name,
		typ:  reflect.TypeFor[C](),
		build: func(ctx context.Context, backend string, spec Spec) (kmsclients.Backend, error) {
			b, err := newBackend(ctx, backend, *spec.(PC))
			if err != nil {
				return nil, err // not a non-nil interface holding a nil B
			}
			return b, nil
		},
	}
}

// Kinds lists the backend kinds built in, by their YAML names, in the
// table's order.
func Kinds() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.name
	}
	return names
}

// kindNames lists every kind, by its YAML name, in table order: "local,
// vault, awskms, azurekv or kmsplugin".
func kindNames() string { return sentence(Kinds()) }

// sentence joins names as a list in prose: "a", "a or b", "a, b or c".
func sentence(names []string) string {
	last := len(names) - 1
	if last < 1 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:last], ", ") + " or " + names[last]
}

// kindFor is the kind whose config type spec points to, and its index
// in kinds.
func kindFor(spec Spec) (kind, int, bool) {
	if !isSet(spec) {
		return kind{}, -1, false
	}
	t := reflect.TypeOf(spec)
	for i, k := range kinds {
		if t == reflect.PointerTo(k.typ) {
			return k, i, true
		}
	}
	return kind{}, -1, false
}

// isSet reports whether spec is a block: neither nil nor a nil pointer.
func isSet(spec Spec) bool {
	v := reflect.ValueOf(spec)
	return v.IsValid() && !(v.Kind() == reflect.Pointer && v.IsNil())
}

// Backend is one entry of backends: a name and exactly one kind block,
// `{name: vault-eu, vault: {...}}`.
type Backend struct {
	Name string
	// Spec is the kind block: &vault.Config{...} for `vault: {...}`.
	Spec Spec
	// more names the kind blocks of the YAML entry beyond the first, which
	// Validate refuses; only decoding sets it.
	more []string
}

// Kind is the YAML name of b's kind, "" when b has none.
func (b Backend) Kind() string {
	k, _, _ := kindFor(b.Spec)
	return k.name
}

// setKinds lists the kind blocks b was given, by their YAML names (a Go
// type's name for a Spec that is no kind's), sorted.
func (b Backend) setKinds() []string {
	if !isSet(b.Spec) {
		return b.more
	}
	name := reflect.TypeOf(b.Spec).String()
	if k, _, ok := kindFor(b.Spec); ok {
		name = k.name
	}
	set := append([]string{name}, b.more...)
	slices.Sort(set)
	return set
}

// wireBackend is Backend as YAML spells it: a struct type made from the
// table, with a name field and then a pointer field for each kind, in
// table order. Decoding
// into it keeps what sigs.k8s.io/yaml does for a typed target (strict
// fields, `keyName: 123` read as the string "123"), and the strict field
// walk (checkFields) reads the fields of a backend from it.
var wireBackend = func() reflect.Type {
	fields := []reflect.StructField{{Name: "Name", Type: reflect.TypeFor[string](), Tag: `json:"name"`}}
	for i, k := range kinds {
		fields = append(fields, reflect.StructField{
			Name: fmt.Sprintf("Kind%d", i),
			Type: reflect.PointerTo(k.typ),
			Tag:  reflect.StructTag(`json:"` + k.name + `,omitempty"`),
		})
	}
	return reflect.StructOf(fields)
}()

// UnmarshalJSON reads `{name: ..., <kind>: {...}}`.
func (b *Backend) UnmarshalJSON(data []byte) error {
	w := reflect.New(wireBackend)
	// sigs.k8s.io/yaml, not encoding/json: its decoding of the file into a
	// typed target stops at a type with UnmarshalJSON, and JSON is YAML.
	if err := yaml.UnmarshalStrict(data, w.Interface()); err != nil {
		return decodeError(err)
	}
	*b = Backend{Name: w.Elem().Field(0).String()}
	for i, k := range kinds {
		f := w.Elem().Field(i + 1)
		switch {
		case f.IsNil():
		case b.Spec == nil:
			b.Spec = f.Interface().(Spec)
		default:
			b.more = append(b.more, k.name)
		}
	}
	return nil
}

// decodeError words a type error in a backend as the file's decoder did
// before backends had a decoder of their own: "Go struct field
// Backend.backends.local of type local.Config".
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err
	}
	if te.Type == wireBackend {
		// Not a mapping: the file's decoder says where.
		te.Type = reflect.TypeFor[Backend]()
		return te
	}
	if te.Struct == "" {
		te.Struct = "Backend"
	}
	te.Field = "backends." + te.Field
	return placedTypeError{te}
}

// placedTypeError is a type error whose place is written already: the
// file's decoder would rewrite that of a *json.UnmarshalTypeError.
type placedTypeError struct{ *json.UnmarshalTypeError }

// MarshalJSON writes `{name: ..., <kind>: {...}}`.
func (b Backend) MarshalJSON() ([]byte, error) {
	w := reflect.New(wireBackend).Elem()
	w.Field(0).SetString(b.Name)
	if isSet(b.Spec) {
		_, i, ok := kindFor(b.Spec)
		if !ok {
			return nil, fmt.Errorf("backend %s: %s", b.Name, notAKind(b.Spec))
		}
		w.Field(i + 1).Set(reflect.ValueOf(b.Spec))
	}
	return json.Marshal(w.Interface())
}

// validate checks b's one kind block; its errors name its fields
// ("awskms.keyID: ...").
func (b Backend) validate() error {
	if _, _, ok := kindFor(b.Spec); !ok {
		return errors.New(notAKind(b.Spec))
	}
	return b.Spec.Validate()
}

func notAKind(spec Spec) string {
	return fmt.Sprintf("%T is not the config of a backend kind (%s): want a pointer to one, such as &local.Config{...}", spec, kindNames())
}

// build constructs the backend.
func (b Backend) build(ctx context.Context) (kmsclients.Backend, error) {
	k, _, ok := kindFor(b.Spec)
	switch {
	case !isSet(b.Spec):
		return nil, errors.New("no backend kind set")
	case !ok:
		return nil, errors.New(notAKind(b.Spec))
	}
	return k.build(ctx, b.Name, b.Spec)
}
