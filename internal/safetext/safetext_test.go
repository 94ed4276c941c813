package safetext_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/trousseau-io/trousseau/internal/safetext"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "default/db-password", "default/db-password"},
		{"letters of other scripts", "café/Ünïcødé/секрет/秘密", "café/Ünïcødé/секрет/秘密"},
		{"a valid U+FFFD is text", "a\uFFFDb", "a\uFFFDb"},
		{"screen clear", "\x1b[2J\x1b[H all recovered", `\x1b[2J\x1b[H all recovered`},
		{"newline, tab and CR", "a\nb\tc\rd", `a\x0ab\x09c\x0dd`},
		{"NUL and DEL", "\x00\x7f", `\x00\x7f`},
		{"C1 CSI as a rune", "a\u009b2Jb", `a\u009b2Jb`},
		{"C1 CSI as a lone byte", "a\x9b2Jb", `a\x9b2Jb`},
		{"invalid UTF-8", "\xff\xc3", `\xff\xc3`},
		{"bidi override", "evil\u202Egpj.exe", `evil\u202egpj.exe`},
		{"bidi isolates", "\u2066x\u2069", `\u2066x\u2069`},
		{"bidi marks", "\u200e\u200f\u061c", `\u200e\u200f\u061c`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"backslash", `a\x1b`, `a\\x1b`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := safetext.Escape(tc.in); got != tc.want {
				t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSprintfEscapesTextArgumentsOnly(t *testing.T) {
	key := "/registry/secrets/default/\x1b[2J\x1b[H all recovered"
	got := safetext.Sprintf("%s %v %d %d %s %s %v %v\n", key, errors.New("e\x1b"), 7, uint32(3),
		2*time.Second, fs.FileMode(0o600), []string{"a\nb"}, nil)
	want := `/registry/secrets/default/\x1b[2J\x1b[H all recovered e\x1b 7 3 2s -rw------- [a\x0ab] <nil>` + "\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestErrorIsOneEscapedLine(t *testing.T) {
	base := errors.New("backend said:\n\x1b[2Jall recovered")
	err := safetext.Error(fmt.Errorf("decrypt: %w", base))
	if got := err.Error(); got != `decrypt: backend said:\x0a\x1b[2Jall recovered` {
		t.Errorf("got %q", got)
	}
	if !errors.Is(err, base) {
		t.Error("errors.Is does not see the wrapped error")
	}
	if safetext.Error(nil) != nil {
		t.Error("Error(nil) is not nil")
	}
}

// FuzzEscape: the output holds no byte or rune a terminal acts on, and
// decodes back to the input.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2J", "\x9b", "\u009b", "\u202e", `\x41`, `\\`, "\xe2\x80", "é\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := safetext.Escape(s)
		if !utf8.ValidString(e) {
			t.Fatalf("Escape(%q) = %q: invalid UTF-8", s, e)
		}
		if i := strings.IndexFunc(e, acted); i >= 0 {
			t.Fatalf("Escape(%q) = %q holds %q", s, e, e[i:])
		}
		if d, err := unescape(e); err != nil || d != s {
			t.Fatalf("Escape(%q) = %q decodes to %q (%v)", s, e, d, err)
		}
		if utf8.ValidString(s) && !strings.ContainsRune(s, '\\') && strings.IndexFunc(s, acted) < 0 && e != s {
			t.Fatalf("Escape(%q) = %q: ordinary text changed", s, e)
		}
		if safetext.Printable(s) != (strings.ReplaceAll(e, `\\`, `\`) == s) {
			t.Fatalf("Printable(%q) = %v, but Escape gives %q", s, safetext.Printable(s), e)
		}
	})
}

// acted reports the runes a terminal acts on or that reorder text.
func acted(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) ||
		r == 0x200e || r == 0x200f || r == 0x061c || r == 0x2028 || r == 0x2029
}

// unescape decodes Escape's output; any other backslash is an error, so
// a decoding that succeeds is the only one.
func unescape(e string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(e); i++ {
		if e[i] != '\\' {
			b.WriteByte(e[i])
			continue
		}
		switch {
		case strings.HasPrefix(e[i:], `\\`):
			b.WriteByte('\\')
			i++
		case strings.HasPrefix(e[i:], `\x`) && len(e) >= i+4:
			n, err := strconv.ParseUint(e[i+2:i+4], 16, 8)
			if err != nil {
				return "", err
			}
			b.WriteByte(byte(n))
			i += 3
		case strings.HasPrefix(e[i:], `\u`) && len(e) >= i+6:
			n, err := strconv.ParseUint(e[i+2:i+6], 16, 32)
			if err != nil {
				return "", err
			}
			b.WriteRune(rune(n))
			i += 5
		default:
			return "", fmt.Errorf("stray backslash at %d", i)
		}
	}
	return b.String(), nil
}

func TestJSONKeepsTheDataAndDropsWhatATerminalActsOn(t *testing.T) {
	in := map[string]string{"key\u202e": "\x1b[2J\u009b2J\x7f all recovered\u2066é"}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got := safetext.JSON(raw)
	if i := strings.IndexFunc(string(got), acted); i >= 0 {
		t.Errorf("%s holds %q", got, got[i:])
	}
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil || !reflect.DeepEqual(back, in) {
		t.Errorf("decodes to %q (%v), want %q", back, err, in)
	}
}
