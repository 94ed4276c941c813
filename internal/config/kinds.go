package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// kindOrder names every backend kind, in the order messages list them.
// Each kind's entry of kinds is registered by its own kind_<name>.go file,
// which the build tag no_<name> leaves out with the kind's package and
// SDK (local is always in). A kind is its YAML name and its package's
// New; the config type is what New takes, and its Validate method is the
// kind's validation. Everything else about kinds (the YAML fields of a
// backend, their strict checks, the list in messages, building) is
// derived from the table. Adding a kind is a package, a name here, a
// kind_<name>.go file and a docs/backends/<kind>.md page (see "Adding a
// backend" in docs/development.md; TestEveryKindIsComplete checks it).
var kindOrder = []string{"local", "vault", "awskms", "azurekv", "kmsplugin", "gcpkms", "pkcs11"}

// kinds is the kinds compiled in, in kindOrder.
var kinds []kind

// register adds k to kinds in its place; kind_<name>.go files call it
// from init.
func register(k kind) {
	rank := func(k kind) int { return slices.Index(kindOrder, k.name) }
	if rank(k) < 0 {
		panic("config: kind " + k.name + " is not in kindOrder")
	}
	i, _ := slices.BinarySearchFunc(kinds, rank(k), func(e kind, r int) int { return rank(e) - r })
	kinds = slices.Insert(kinds, i, k)
}

// leftOut reports whether name is a kind that this binary was built
// without.
func leftOut(name string) bool {
	_, in := kindNamed(name)
	return !in && slices.Contains(kindOrder, name)
}

// leftOutError is the complaint about a block of a kind left out.
func leftOutError(name string) string {
	return fmt.Sprintf("kind %q is not compiled into this binary (built with -tags no_%s); use a build with it", name, name)
}

// Spec is a backend kind's config block: a pointer to the config type of
// one of the kinds (*local.Config for `local: {...}`, *vault.Config, ...).
type Spec interface {
	// Validate names the field at fault ("vault.keyName: required").
	Validate() error
}

// kind is one entry of the table.
type kind struct {
	name    string       // the YAML key of the kind's block
	typ     reflect.Type // its config type (local.Config); a Spec is a *typ
	newSpec func() Spec
	holds   func(Spec) bool // whether a Spec is a non-nil *typ
	build   func(ctx context.Context, name string, spec Spec) (kmsclients.Backend, error)
	// checkAll, if set, checks the kind's backends against each other
	// and the rest of the file.
	checkAll func(*Config, *problems)
}

// kindOf makes the table entry of a kind from its New, which every
// backend package has with this signature.
func kindOf[C any, PC interface {
	*C
	Spec
}, B kmsclients.Backend](name string, newBackend func(context.Context, string, C) (B, error)) kind {
	return kind{
		name:    name,
		typ:     reflect.TypeFor[C](),
		newSpec: func() Spec { return PC(new(C)) },
		holds: func(spec Spec) bool {
			p, ok := spec.(PC)
			return ok && p != nil
		},
		build: func(ctx context.Context, backend string, spec Spec) (kmsclients.Backend, error) {
			b, err := newBackend(ctx, backend, *spec.(PC))
			if err != nil {
				return nil, err // not a non-nil interface holding a nil B
			}
			return b, nil
		},
	}
}

// Kinds lists the backend kinds compiled in, by their YAML names, in the
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
	for i, k := range kinds {
		if k.holds(spec) {
			return k, i, true
		}
	}
	return kind{}, -1, false
}

// kindNamed is the kind whose YAML name is name.
func kindNamed(name string) (kind, bool) {
	for _, k := range kinds {
		if k.name == name {
			return k, true
		}
	}
	return kind{}, false
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

// UnmarshalJSON reads `{name: ..., <kind>: {...}}`: the first kind block
// becomes Spec, any other is left to Validate to refuse. The strict field
// walk (checkFields) names what is wrong in a file before this runs; these
// errors are for a backend decoded without it.
func (b *Backend) UnmarshalJSON(data []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return fmt.Errorf("backend: want a mapping of fields: %w", err)
	}
	*b = Backend{}
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		raw := fields[key]
		k, isKind := kindNamed(key)
		switch {
		case key == "name":
			if err := json.Unmarshal(raw, &b.Name); err != nil {
				return fmt.Errorf("backend name: %w", err)
			}
		case leftOut(key):
			return fmt.Errorf("backend: %s", leftOutError(key))
		case !isKind:
			return fmt.Errorf("backend: unknown field %q", key)
		case string(raw) == "null":
		case b.Spec != nil:
			b.more = append(b.more, key)
		default:
			b.Spec = k.newSpec()
			// sigs.k8s.io/yaml, not encoding/json: it reads `keyName: 123`
			// as "123" for a string field, as it does in the rest of the file.
			if err := yaml.UnmarshalStrict(raw, b.Spec); err != nil {
				return fmt.Errorf("backend %s: %w", key, err)
			}
		}
	}
	return nil
}

// MarshalJSON writes `{name: ..., <kind>: {...}}`.
func (b Backend) MarshalJSON() ([]byte, error) {
	name, err := json.Marshal(b.Name)
	if err != nil || !isSet(b.Spec) {
		return fmt.Appendf(nil, `{"name":%s}`, name), err
	}
	k, _, ok := kindFor(b.Spec)
	if !ok {
		return nil, fmt.Errorf("backend %s: %s", b.Name, notAKind(b.Spec))
	}
	spec, err := json.Marshal(b.Spec)
	return fmt.Appendf(nil, `{"name":%s,%q:%s}`, name, k.name, spec), err
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
