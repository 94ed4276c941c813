package recovery

import (
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v2"
)

// appendYAML writes o as yaml.v2 (and so sigs.k8s.io/yaml) writes it,
// several times faster: the Secrets and ConfigMaps of a recovery are
// mostly short plain strings, whose style is decided here without
// yaml.v2's emitter. It reports false for an object holding something
// whose output is not decided here (non-ASCII or control characters, line
// breaks, long strings with spaces, numbers of other types); render then
// uses yaml.v2 for the whole object. TestAppendYAMLMatchesYAMLv2 compares
// the two.
func appendYAML(b []byte, o map[string]any) ([]byte, bool) {
	if len(o) == 0 {
		return b, false
	}
	return (&yamlWriter{b: b}).mapping(o, 0, false)
}

type yamlWriter struct {
	b    []byte
	keys []string // reused, a stack of the keys of the maps being written
}

// yamlWidth is yaml.v2's line width: a scalar with spaces may be folded
// past it.
const yamlWidth = 80

// maxSimpleKey is below yaml.v2's longest simple key (128), past which it
// writes "? key".
const maxSimpleKey = 100

// mapping writes m's entries at indent, sorted as yaml.v2 sorts them;
// inline: the first goes on the current line (after "- ").
func (w *yamlWriter) mapping(m map[string]any, indent int, inline bool) ([]byte, bool) {
	base := len(w.keys)
	for k := range m {
		w.keys = append(w.keys, k)
	}
	keys := w.keys[base:]
	slices.SortFunc(keys, compareYAMLKeys)
	defer func() { w.keys = w.keys[:base] }()
	for i, k := range keys {
		if i > 0 || !inline {
			w.indent(indent)
		}
		if len(k) > maxSimpleKey || !w.string(k, indent, true) {
			return w.b, false
		}
		w.b = append(w.b, ':')
		if !w.value(m[k], indent, indent+len(k)+2, false) {
			return w.b, false
		}
	}
	return w.b, true
}

// sequence writes s's items at indent; inline: as in mapping.
func (w *yamlWriter) sequence(s []any, indent int, inline bool) bool {
	for i, v := range s {
		if i > 0 || !inline {
			w.indent(indent)
		}
		w.b = append(w.b, '-')
		if !w.value(v, indent+2, indent+2, true) {
			return false
		}
	}
	return true
}

// value writes v after "key:" or "-", and the line's end; nested is the
// indent of a nested block, col the column of a scalar.
func (w *yamlWriter) value(v any, nested, col int, inSeq bool) bool {
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			w.b = append(w.b, " {}\n"...)
			return true
		}
		if inSeq {
			w.b = append(w.b, ' ')
			_, ok := w.mapping(v, nested, true)
			return ok
		}
		w.b = append(w.b, '\n')
		_, ok := w.mapping(v, nested+2, false)
		return ok
	case []any:
		if len(v) == 0 {
			w.b = append(w.b, " []\n"...)
			return true
		}
		if inSeq {
			w.b = append(w.b, ' ')
			return w.sequence(v, nested, true)
		}
		// yaml.v2 does not indent a sequence inside a mapping.
		w.b = append(w.b, '\n')
		return w.sequence(v, nested, false)
	}
	w.b = append(w.b, ' ')
	if !w.scalar(v, col) {
		return false
	}
	w.b = append(w.b, '\n')
	return true
}

func (w *yamlWriter) indent(n int) {
	for range n {
		w.b = append(w.b, ' ')
	}
}

// scalar writes what JSON decodes to, besides maps and lists.
func (w *yamlWriter) scalar(v any, col int) bool {
	switch v := v.(type) {
	case string:
		return w.string(v, col, false)
	case int64:
		w.b = strconv.AppendInt(w.b, v, 10)
	case float64:
		s := strconv.FormatFloat(v, 'g', -1, 64)
		switch s {
		case "+Inf", "-Inf", "NaN":
			return false
		}
		w.b = append(w.b, s...)
	case bool:
		w.b = strconv.AppendBool(w.b, v)
	case nil:
		w.b = append(w.b, "null"...)
	default:
		return false
	}
	return true
}

// string writes s in the style yaml.v2 picks: plain unless it would read
// back as something else (double-quoted) or starts or ends like YAML
// syntax (single-quoted). col is where s starts, for folding.
func (w *yamlWriter) string(s string, col int, key bool) bool {
	if s == "" {
		w.b = append(w.b, `""`...)
		return true
	}
	spaces := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < ' ' || c > '~':
			return false
		case c == ' ':
			spaces = true
		}
	}
	if spaces && !key && col+len(s)+2 > yamlWidth {
		return false
	}
	str, known := readsAsString(s)
	switch {
	case !known && spaces:
		return false
	case !known:
		return w.asYAMLv2(s)
	case !str:
		if strings.ContainsAny(s, `"\`) {
			return false
		}
		w.b = append(append(append(w.b, '"'), s...), '"')
	case plainLooksLikeSyntax(s):
		w.b = append(w.b, '\'')
		w.b = append(w.b, strings.ReplaceAll(s, "'", "''")...)
		w.b = append(w.b, '\'')
	default:
		w.b = append(w.b, s...)
	}
	return true
}

// asYAMLv2 writes a string without spaces as yaml.v2 writes it alone:
// without spaces nothing depends on the column, and a value or key
// (neither empty nor multi-line) is written as a document's only scalar.
func (w *yamlWriter) asYAMLv2(s string) bool {
	out, err := yaml.Marshal(s)
	if err != nil {
		return false
	}
	w.b = append(w.b, strings.TrimSuffix(string(out), "\n")...)
	return true
}

// yamlWords are the plain words yaml.v2 reads as booleans, nulls and
// special floats.
var yamlWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`y Y yes Yes YES true True TRUE on On ON n N no No NO false False FALSE off Off OFF
		~ null Null NULL .nan .NaN .NAN .inf .Inf .INF +.inf +.Inf +.INF -.inf -.Inf -.INF`) {
		yamlWords[w] = true
	}
}

// readsAsString says whether yaml.v2 reads s, written plain, back as a
// string (known is false where that takes its number and time parsers).
// Like yaml.v2, it looks at the first character: only a digit, sign or
// dot can start a number or time, only one of "yYnNtTfFoO~" a word.
func readsAsString(s string) (str, known bool) {
	c := s[0]
	switch {
	case yamlWords[s]:
		return false, true
	case c >= '0' && c <= '9', c == '+', c == '-', c == '.':
		if strings.IndexByte(s, ':') >= 0 {
			return false, false // a time or a base-60 float
		}
		return true, strings.IndexFunc(s, notInNumbers) >= 0
	}
	return true, true
}

// notInNumbers is true of a character that no int, float (Go's parser
// takes "inf", "nan", hex and exponents), time or base-60 float holds.
func notInNumbers(r rune) bool {
	return !strings.ContainsRune("0123456789+-._:xXoObBeEaAcCdDfFpPiInNtTyYzZ", r)
}

// plainLooksLikeSyntax says whether yaml.v2 writes the plain string s
// single-quoted: it starts with an indicator or a document marker, holds
// ": " or " #", or starts or ends with a space.
func plainLooksLikeSyntax(s string) bool {
	if strings.HasPrefix(s, "---") || strings.HasPrefix(s, "...") || s[0] == ' ' || s[len(s)-1] == ' ' {
		return true
	}
	switch s[0] {
	case '#', ',', '[', ']', '{', '}', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`':
		return true
	case '?', ':', '-':
		if len(s) == 1 || s[1] == ' ' {
			return true
		}
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case ':':
			if i+1 == len(s) || s[i+1] == ' ' {
				return true
			}
		case '#':
			if s[i-1] == ' ' {
				return true
			}
		}
	}
	return false
}

// compareYAMLKeys orders ASCII keys as yaml.v2 does: letters by code,
// before anything else; runs of digits by their value.
func compareYAMLKeys(a, b string) int {
	if yamlKeyLess(a, b) {
		return -1
	}
	if yamlKeyLess(b, a) {
		return 1
	}
	return 0
}

func yamlKeyLess(a, b string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		al, bl := isASCIILetter(a[i]), isASCIILetter(b[i])
		if al || bl {
			return !al || bl && a[i] < b[i]
		}
		var an, bn int64
		if a[i] == '0' || b[i] == '0' {
			// Zeros after other digits are part of a number.
			for j := i - 1; j >= 0 && isDigit(a[j]); j-- {
				if a[j] != '0' {
					an, bn = 1, 1
					break
				}
			}
		}
		ai, bi := i, i
		for ; ai < len(a) && isDigit(a[ai]); ai++ {
			an = an*10 + int64(a[ai]-'0')
		}
		for ; bi < len(b) && isDigit(b[bi]); bi++ {
			bn = bn*10 + int64(b[bi]-'0')
		}
		if an != bn {
			return an < bn
		}
		if ai != bi {
			return ai < bi
		}
		return a[i] < b[i]
	}
	return len(a) < len(b)
}

func isASCIILetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool       { return c >= '0' && c <= '9' }
