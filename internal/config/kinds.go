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
// Each kind_<name>.go registers its kind; the build tag no_<name> leaves
// it out with its package and SDK (local is always in). All else about
// kinds (YAML fields, strict checks, messages, building) derives from the
// table: see "Adding a backend" in docs/development.md.
var kindOrder = []string{"local", "vault", "awskms", "azurekv", "kmsplugin", "gcpkms", "pkcs11"}

// kinds is the kinds compiled in, in kindOrder.
var kinds []kind

// register adds k to kinds in kindOrder's place; kind_<name>.go's init
// calls it.
func register(k kind) {
	rank := func(k kind) int { return slices.Index(kindOrder, k.name) }
	if rank(k) < 0 {
		panic("config: kind " + k.name + " is not in kindOrder")
	}
	i, _ := slices.BinarySearchFunc(kinds, rank(k), func(e kind, r int) int { return rank(e) - r })
	kinds = slices.Insert(kinds, i, k)
}

// leftOut reports whether this binary was built without kind name.
func leftOut(name string) bool {
	_, in := kindNamed(name)
	return !in && slices.Contains(kindOrder, name)
}

func leftOutError(name string) string {
	return fmt.Sprintf("kind %q is not compiled into this binary (built with -tags no_%s); use a build with it", name, name)
}

// Spec is a backend kind's config block, a pointer to its config type
// (*local.Config for `local: {...}`).
type Spec interface {
	// Validate names the field at fault ("vault.keyName: required").
	Validate() error
}

// kind is one entry of the table.
type kind struct {
	name     string       // the YAML key of the kind's block
	typ      reflect.Type // a Spec is a *typ
	newSpec  func() Spec
	holds    func(Spec) bool // a non-nil *typ
	build    func(ctx context.Context, name string, spec Spec) (kmsclients.Backend, error)
	checkAll func(*Config, *problems) // optional: checks across backends
}

// kindOf makes a kind's table entry from its package's New.
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
				return nil, err // not an interface holding a nil B
			}
			return b, nil
		},
	}
}

// Kinds lists the backend kinds compiled in, by YAML name, in order.
func Kinds() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.name
	}
	return names
}

// kindNames lists [Kinds] in prose: "local, vault or awskms".
func kindNames() string { return sentence(Kinds()) }

// sentence joins names as a list in prose: "a", "a or b", "a, b or c".
func sentence(names []string) string {
	last := len(names) - 1
	if last < 1 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:last], ", ") + " or " + names[last]
}

// kindFor is spec's kind and its index in kinds.
func kindFor(spec Spec) (kind, int, bool) {
	for i, k := range kinds {
		if k.holds(spec) {
			return k, i, true
		}
	}
	return kind{}, -1, false
}

func kindNamed(name string) (kind, bool) {
	for _, k := range kinds {
		if k.name == name {
			return k, true
		}
	}
	return kind{}, false
}

// isSet: spec is neither nil nor a nil pointer.
func isSet(spec Spec) bool {
	v := reflect.ValueOf(spec)
	return v.IsValid() && !(v.Kind() == reflect.Pointer && v.IsNil())
}

// Backend is one entry of backends: a name and exactly one kind block,
// `{name: vault-eu, vault: {...}}`.
type Backend struct {
	Name string
	Spec Spec     // &vault.Config{...} for `vault: {...}`
	more []string // decoded kind blocks beyond the first, for Validate to refuse
}

// Kind is b's kind's YAML name, or "".
func (b Backend) Kind() string {
	k, _, _ := kindFor(b.Spec)
	return k.name
}

// setKinds lists b's kind blocks by YAML name (Go type for a foreign
// Spec), sorted.
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
// becomes Spec, others are left to Validate to refuse. In a file,
// checkFields names faults first; these errors are for other callers.
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
			// sigs.k8s.io/yaml, as for the rest of the file: `keyName: 123`
			// is "123".
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

// validate checks b's one kind block, naming its fields ("awskms.keyID").
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
