package monitoring

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// reads is what a PromQL expression reads from Prometheus: each vector
// selector, with the label names of its matchers, and the label names of
// its grouping clauses (by, without, on, ignoring, group_left,
// group_right). promtool checks that the expression parses; this lexer
// only has to find names in an expression that does.
type reads struct {
	selectors []selector
	grouping  []string
}

type selector struct {
	metric string
	labels []string
}

var (
	groupingWords = set("by", "without", "on", "ignoring", "group_left", "group_right")
	otherWords    = set("and", "or", "unless", "bool", "offset", "atan2", "inf", "nan")
	aggregations  = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "bottomk", "topk", "quantile", "limitk", "limit_ratio")
	// Functions that read or write labels named in string arguments: this
	// lexer does not follow them, so an expression using one is refused.
	labelFunctions = set("label_replace", "label_join", "count_values", "sort_by_label", "sort_by_label_desc", "info")
)

func set(words ...string) map[string]bool {
	m := map[string]bool{}
	for _, w := range words {
		m[w] = true
	}
	return m
}

// parsePromQL finds what expr reads.
func parsePromQL(expr string) (reads, error) {
	l := &lexer{src: []rune(expr)}
	var out reads
	for {
		tok, err := l.next()
		if err != nil || tok == "" {
			return out, err
		}
		if tok == "{" {
			return out, fmt.Errorf("a selector without a metric name: name the metric")
		}
		if !isIdent(tok) {
			continue
		}
		switch after := l.peek(); {
		case groupingWords[tok]:
			if after == '(' {
				l.pos++
				names, err := l.nameList(')')
				if err != nil {
					return out, err
				}
				out.grouping = append(out.grouping, names...)
			}
		case otherWords[strings.ToLower(tok)]:
		case labelFunctions[tok]:
			return out, fmt.Errorf("%s reads labels named in strings, which this test does not follow: extend parsePromQL", tok)
		case after == '(':
			// a function, or an aggregation with its clause after
		case aggregations[tok] && l.startsWith("by", "without"):
		default:
			sel := selector{metric: tok}
			if after == '{' {
				l.pos++
				if sel.labels, err = l.matchers(); err != nil {
					return out, err
				}
			}
			out.selectors = append(out.selectors, sel)
		}
	}
}

type lexer struct {
	src []rune
	pos int
}

func (l *lexer) skipSpace() {
	for l.pos < len(l.src) {
		switch r := l.src[l.pos]; {
		case unicode.IsSpace(r):
			l.pos++
		case r == '#':
			for l.pos < len(l.src) && l.src[l.pos] != '\n' {
				l.pos++
			}
		default:
			return
		}
	}
}

func (l *lexer) peek() rune {
	l.skipSpace()
	if l.pos == len(l.src) {
		return 0
	}
	return l.src[l.pos]
}

// startsWith: the next token is one of words.
func (l *lexer) startsWith(words ...string) bool {
	save := l.pos
	tok, _ := l.next()
	l.pos = save
	return slices.Contains(words, tok)
}

// next returns the next token: an identifier, a string (with its quotes),
// a number or duration, a range or subquery's brackets as one token, or a
// single punctuation rune; "" at the end.
func (l *lexer) next() (string, error) {
	l.skipSpace()
	if l.pos == len(l.src) {
		return "", nil
	}
	start, r := l.pos, l.src[l.pos]
	switch {
	case r == '"' || r == '\'' || r == '`':
		return l.str(r)
	case r == '[':
		for l.pos < len(l.src) && l.src[l.pos] != ']' {
			l.pos++
		}
		if l.pos == len(l.src) {
			return "", fmt.Errorf("unclosed [ at %d", start)
		}
	case isNameStart(r):
		for l.pos < len(l.src) && isNameRune(l.src[l.pos]) {
			l.pos++
		}
		return string(l.src[start:l.pos]), nil
	case unicode.IsDigit(r) || r == '.':
		for l.pos < len(l.src) && (isNameRune(l.src[l.pos]) || l.src[l.pos] == '.') {
			l.pos++
		}
		return string(l.src[start:l.pos]), nil
	}
	l.pos++
	return string(l.src[start:l.pos]), nil
}

func (l *lexer) str(quote rune) (string, error) {
	start := l.pos
	for l.pos++; l.pos < len(l.src); l.pos++ {
		switch l.src[l.pos] {
		case '\\':
			if quote != '`' {
				l.pos++
			}
		case quote:
			l.pos++
			return string(l.src[start:l.pos]), nil
		}
	}
	return "", fmt.Errorf("unclosed string at %d", start)
}

// nameList reads "a, b, c" up to end, past it.
func (l *lexer) nameList(end rune) ([]string, error) {
	var names []string
	for {
		tok, err := l.next()
		switch {
		case err != nil:
			return nil, err
		case tok == string(end):
			return names, nil
		case tok == ",":
		case isIdent(tok):
			names = append(names, tok)
		default:
			return nil, fmt.Errorf("unexpected %q in a list of labels", tok)
		}
	}
}

// matchers reads `name op "value", ...}` and returns the names.
func (l *lexer) matchers() ([]string, error) {
	var names []string
	for {
		tok, err := l.next()
		switch {
		case err != nil:
			return nil, err
		case tok == "}":
			return names, nil
		case tok == ",":
		case isIdent(tok):
			if tok == "__name__" {
				return nil, fmt.Errorf("a __name__ matcher: name the metric instead")
			}
			names = append(names, tok)
			if err := l.matcherValue(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unexpected %q in a selector's matchers", tok)
		}
	}
}

// matcherValue reads `op "value"`.
func (l *lexer) matcherValue() error {
	for {
		tok, err := l.next()
		if err != nil {
			return err
		}
		if strings.ContainsAny(tok[:1], "\"'`") {
			return nil
		}
		if !strings.Contains("=!~", tok) {
			return fmt.Errorf("unexpected %q in a matcher", tok)
		}
	}
}

func isNameStart(r rune) bool { return r == '_' || r == ':' || unicode.IsLetter(r) }
func isNameRune(r rune) bool  { return isNameStart(r) || unicode.IsDigit(r) }
func isIdent(tok string) bool { return tok != "" && isNameStart([]rune(tok)[0]) }

func TestParsePromQL(t *testing.T) {
	cases := []struct {
		expr string
		want reads
	}{
		{`up{job="trousseau"} == 0`, reads{selectors: []selector{{"up", []string{"job"}}}}},
		{`absent(up{job="a,b}"})`, reads{selectors: []selector{{"up", []string{"job"}}}}},
		{`sum by (backend, le) (rate(x_bucket{a=~"$i", b!="}"}[$__rate_interval]))`,
			reads{selectors: []selector{{"x_bucket", []string{"a", "b"}}}, grouping: []string{"backend", "le"}}},
		{"count by (cluster) (count by (cluster, k) (info_metric)) > 1",
			reads{selectors: []selector{{"info_metric", nil}}, grouping: []string{"cluster", "cluster", "k"}}},
		{"sum without(a) (x) / on(instance) group_left(b) y offset 5m",
			reads{selectors: []selector{{"x", nil}, {"y", nil}}, grouping: []string{"a", "instance", "b"}}},
		{"increase(c[1d]) > 0\nor (c > 0 and on (job, instance) (time() - p < 86400)) # c at start",
			reads{selectors: []selector{{"c", nil}, {"c", nil}, {"p", nil}}, grouping: []string{"job", "instance"}}},
		{"histogram_quantile(0.99, sum(rate(h[5m:1m])) by (le)) > Inf", reads{selectors: []selector{{"h", nil}}, grouping: []string{"le"}}},
		{`topk(3, a:recorded{x='it\'s'}) * 1e3`, reads{selectors: []selector{{"a:recorded", []string{"x"}}}}},
	}
	for _, c := range cases {
		got, err := parsePromQL(c.expr)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v, %v\nwant %+v", c.expr, got, err, c.want)
		}
	}
	for _, bad := range []string{`label_replace(x, "a", "$1", "b", ".*")`, `{__name__="x"}`, `x{a="b}`, `x[5m`} {
		if _, err := parsePromQL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
