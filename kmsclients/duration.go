package kmsclients

import (
	"fmt"
	"strconv"
	"time"
)

// Duration is a time.Duration written as "30s", "720h": the one duration
// type of the config file, config.Duration and the duration fields of
// every backend's config block alike. It lives here, below both, because
// config imports the backends; being one type is what lets the config's
// strict field walk name the path of a bad duration in a backend block
// ("backends[0].kmsplugin.timeout: ...") as it does for its own fields.
type Duration struct{ time.Duration }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(d.String())), nil }
