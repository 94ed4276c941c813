package config

import (
	"encoding"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// checkFields walks the YAML against [Config] before decoding, to name a
// typo or bad duration by its full path ("backends[1].local.keyFlie"),
// which the JSON decoder does not give.
func checkFields(raw []byte) error {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return yamlSyntaxError(raw, err)
	}
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return err
	}
	var errs []string
	walk(doc, reflect.TypeOf(Config{}), "", &errs)
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

var (
	// durationType is every duration of the file (see [Duration]).
	durationType = reflect.TypeFor[Duration]()
	backendType  = reflect.TypeFor[Backend]()
)

func walk(v any, t reflect.Type, path string, errs *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return
	}
	switch {
	case t == backendType:
		walkFields(v, path, errs, func(k string) (reflect.Type, string) { return backendField(path, k) })
	case t == durationType:
		if err := checkDuration(v); err != nil {
			*errs = append(*errs, fmt.Sprintf("%s: %v", path, err))
		}
	case decodesItself(t):
		// Its own decoder says what it wants.
	case t.Kind() == reflect.Struct:
		fields := jsonFields(t)
		walkFields(v, path, errs, func(k string) (reflect.Type, string) {
			if ft, ok := fields[k]; ok {
				return ft, ""
			}
			return nil, fmt.Sprintf("unknown field %q", join(path, k))
		})
	case t.Kind() == reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, fmt.Sprintf("%s: want a mapping, got %s", path, describe(v)))
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			switch m[k].(type) {
			case []any, map[string]any: // a scalar is the decoder's to convert
				walk(m[k], t.Elem(), join(path, k), errs)
			}
		}
	case t.Kind() == reflect.Slice:
		items, ok := v.([]any)
		if !ok {
			*errs = append(*errs, fmt.Sprintf("%s: want a list, got %s", path, describe(v)))
			return
		}
		for i, item := range items {
			walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	default:
		if err := checkScalar(v, t.Kind()); err != nil {
			*errs = append(*errs, fmt.Sprintf("%s: %v", path, err))
		}
	}
}

// walkFields walks a mapping's fields by fieldType, or its complaint.
func walkFields(v any, path string, errs *[]string, fieldType func(string) (reflect.Type, string)) {
	m, ok := v.(map[string]any)
	if !ok {
		*errs = append(*errs, fmt.Sprintf("%s: want a mapping of fields, got %s", orTop(path), describe(v)))
		return
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		ft, complaint := fieldType(k)
		if complaint != "" {
			*errs = append(*errs, complaint)
			continue
		}
		walk(m[k], ft, join(path, k), errs)
	}
}

// backendField is the type of a backend's field: name, or a kind block.
func backendField(path, key string) (reflect.Type, string) {
	if key == "name" {
		return reflect.TypeFor[string](), ""
	}
	if leftOut(key) {
		return nil, path + ": " + leftOutError(key)
	}
	if k, ok := kindNamed(key); ok {
		return k.typ, ""
	}
	return nil, fmt.Sprintf("unknown field %q", join(path, key))
}

// decodesItself: t has a decoder of its own, which checks what it reads.
func decodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(reflect.TypeFor[json.Unmarshaler]()) || p.Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

// checkScalar says, in the file's words rather than Go's, what is wrong
// with a scalar as YAML gave it: "want a whole number, got \"two\"".
func checkScalar(v any, k reflect.Kind) error {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if f, ok := v.(float64); !ok || f != math.Trunc(f) {
			return fmt.Errorf("want a whole number, got %s", describe(v))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f, ok := v.(float64); !ok || f != math.Trunc(f) || f < 0 {
			return fmt.Errorf("want a whole number of 0 or more, got %s", describe(v))
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			return fmt.Errorf("want a string, got %s%s", describe(v), quoteHint(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("want true or false, got %s", describe(v))
		}
	}
	return nil
}

// describe shows a value as the file wrote it.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case nil:
		return "nothing"
	}
	return fmt.Sprint(v)
}

// orTop names the whole file for the empty path.
func orTop(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}

// checkDuration says what is wrong with a duration as YAML gave it; a
// bare number is the usual mistake (seconds? milliseconds?).
func checkDuration(v any) error {
	switch v := v.(type) {
	case string:
		if _, err := time.ParseDuration(v); err != nil {
			return fmt.Errorf("want a duration such as \"30s\", got %q", v)
		}
		return nil
	case float64:
		return fmt.Errorf("want a duration with its unit such as \"%gs\", got the bare number %g", v, v)
	}
	return fmt.Errorf("want a duration such as \"30s\", got %v", v)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonFields maps a struct's JSON names to field types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// quoteHint tells how to write a number or a boolean as a string.
func quoteHint(v any) string {
	switch v.(type) {
	case float64, bool:
		return " (quote it)"
	}
	return ""
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlSyntaxError names the line at fault and shows it. The YAML parser
// counts the lines of its parser errors ("did not find expected ...")
// from 0 and those of its scanner errors from 1.
func yamlSyntaxError(raw []byte, err error) error {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	n, _ := strconv.Atoi(m[1])
	if strings.HasPrefix(m[2], "did not find expected") {
		n++
	}
	lines := strings.Split(string(raw), "\n")
	if n < 1 || n > len(lines) || strings.TrimSpace(lines[n-1]) == "" {
		return fmt.Errorf("YAML syntax error at line %d (the end of the file): %s; look for an unclosed quote or bracket above", n, m[2])
	}
	return fmt.Errorf("YAML syntax error at line %d: %s:\n  %d | %s", n, m[2], n, lines[n-1])
}
