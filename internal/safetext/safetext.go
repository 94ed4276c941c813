// Package safetext escapes untrusted text (etcd keys, object names,
// backend answers) for a terminal or a log line, so that it cannot move
// the cursor, start a line or reorder the text around it to fake output.
package safetext

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Escape returns s with a visible escape for C0 controls (newline and
// tab too), DEL and invalid UTF-8 bytes (\x1b, \xff); C1, bidi and line
// or paragraph separator runes (\u009b, \u202e); and the backslash (\\),
// so that the result decodes to s one way only. Other runes are kept.
func Escape(s string) string {
	i := unsafeAt(s, true)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r < 0x20, r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Printable reports whether [Escape] keeps s as it is, backslashes aside.
func Printable(s string) bool { return unsafeAt(s, false) < 0 }

// unsafeAt is the index of the first byte Escape changes (a backslash
// only with backslash), or -1.
func unsafeAt(s string, backslash bool) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || (c == '\\' && backslash) {
				return i
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || unsafeRune(r) {
			return i
		}
		i += size
	}
	return -1
}

// unsafeRune reports the non-ASCII runes a terminal acts on or that
// change how the text around them reads.
func unsafeRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f: // C1 controls (CSI is U+009B)
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi overrides and isolates
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // bidi marks
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}

// Sprintf is [fmt.Sprintf] with every argument but numbers and booleans
// escaped by [Escape]. The format is trusted; format text with %s or %v.
func Sprintf(format string, args ...any) string {
	return fmt.Sprintf(format, escapeArgs(args)...)
}

// Fprintf is [fmt.Fprintf] with the arguments escaped as [Sprintf] does.
func Fprintf(w io.Writer, format string, args ...any) (int, error) {
	return fmt.Fprintf(w, format, escapeArgs(args)...)
}

func escapeArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = escapeArg(a)
	}
	return out
}

func escapeArg(a any) any {
	if a == nil {
		return a
	}
	switch reflect.TypeOf(a).Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return a
	}
	switch v := a.(type) {
	case string:
		return Escape(v)
	case error:
		return Escape(v.Error())
	case fmt.Stringer:
		return Escape(v.String())
	}
	return Escape(fmt.Sprint(a))
}

// Error is err with its message escaped by [Escape] (one line, whatever
// err says); errors.Is and errors.As see err.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return escaped{err}
}

type escaped struct{ err error }

func (e escaped) Error() string { return Escape(e.err.Error()) }
func (e escaped) Unwrap() error { return e.err }

// JSON escapes (\uXXXX) the runes encoding/json leaves raw that a terminal
// acts on (DEL, C1, bidi). They can only stand inside strings, where the
// escape means the same rune, so the data does not change.
func JSON(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == 0x7f || unsafeRune(r) {
			if out == nil {
				out = append(make([]byte, 0, len(b)+16), b[:i]...)
			}
			out = fmt.Appendf(out, `\u%04x`, r)
		} else if out != nil {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	if out == nil {
		return b
	}
	return out
}
