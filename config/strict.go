package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// checkFields walks the YAML document against the Config type before it is
// decoded, so that a typo or a bad duration is reported with its full path
// ("backends[1].local.keyFlie"), which the JSON decoder does not give.
func checkFields(raw []byte) error {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return err
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
	// durationType is the one duration type of the file: config.Duration
	// is kmsclients.Duration, which backends' blocks use too (such as
	// kmsplugin.timeout), so theirs are checked and named alike.
	durationType = reflect.TypeFor[Duration]()
	backendType  = reflect.TypeFor[Backend]()
)

func walk(v any, t reflect.Type, path string, errs *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == backendType {
		t = wireBackend // a backend's fields are those of the kinds table
	}
	if v == nil {
		return
	}
	switch {
	case t == durationType:
		if err := checkDuration(v); err != nil {
			*errs = append(*errs, fmt.Sprintf("%s: %v", path, err))
		}
	case t.Kind() == reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return // the decoder reports the type error
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, known := fields[k]
			if !known {
				*errs = append(*errs, fmt.Sprintf("unknown field %q", join(path, k)))
				continue
			}
			walk(m[k], ft, join(path, k), errs)
		}
	case t.Kind() == reflect.Slice:
		if items, ok := v.([]any); ok {
			for i, item := range items {
				walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
			}
		}
	}
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
