package recovery

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/trousseau-io/trousseau/internal/safetext"
)

// maxExamples is how many keys a failure reason lists.
const maxExamples = 3

// maxDEKLines and maxReasonLines bound what the summary lists.
const (
	maxDEKLines    = 20
	maxReasonLines = 20
)

// Summary is the outcome of a run.
type Summary struct {
	Source   string
	Revision int64
	Warnings []string
	// Damaged: the source failed an integrity check and was read anyway.
	Damaged bool
	DryRun  bool

	// Found counts the selected keys (and unreadable records).
	Found int
	// Decrypted counts objects decrypted and decoded (and written, unless
	// a dry run).
	Decrypted int
	// Unencrypted counts objects stored in the clear that were written
	// (Options.IncludeUnencrypted).
	Unencrypted int
	// NotEncrypted and OtherProvider count what was skipped.
	NotEncrypted, OtherProvider int
	Failed                      int
	// Reasons groups the failures by their message, most frequent first.
	Reasons []*Reason

	DEKs     []DEKInfo
	Backends []BackendStatus
	Took     time.Duration

	reasons      map[string]*Reason
	outputFailed bool
}

// Reason is one failure message and the keys that failed with it.
type Reason struct {
	Text     string
	Count    int
	Examples []string
}

// OK reports whether nothing failed.
func (s *Summary) OK() bool { return s.Failed == 0 && !s.outputFailed && !s.Damaged }

// Err is nil when OK, else an error that says how many objects failed.
func (s *Summary) Err() error {
	switch {
	case s.Failed > 0:
		return fmt.Errorf("%d of %d objects could not be recovered (see the summary)", s.Failed, s.Found)
	case s.outputFailed:
		return fmt.Errorf("output failed (see the summary)")
	case s.Damaged:
		return fmt.Errorf("the snapshot is damaged; what could be read was recovered (see the warnings)")
	}
	return nil
}

// Rate is objects handled per second.
func (s *Summary) Rate() float64 {
	if s.Took <= 0 {
		return 0
	}
	return float64(s.Found) / s.Took.Seconds()
}

func (s *Summary) account(r result, sink Sink) {
	if r.outcome == ignored {
		return
	}
	s.Found++
	switch r.outcome {
	case notEncrypted:
		s.NotEncrypted++
		return
	case otherProvider:
		s.OtherProvider++
		return
	case failed:
		s.fail(r.key, r.err)
		return
	}
	if sink != nil && !r.written {
		if err := sink.Put(r.k, r.rendered); err != nil {
			s.fail(r.key, err)
			return
		}
	}
	if r.outcome == plainWritten {
		s.Unencrypted++
	} else {
		s.Decrypted++
	}
}

func (s *Summary) fail(key string, err error) {
	s.Failed++
	text := err.Error()
	r := s.reasons[text]
	if r == nil {
		r = &Reason{Text: text}
		s.reasons[text] = r
		s.Reasons = append(s.Reasons, r)
	}
	r.Count++
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, key)
	}
}

// finish orders the reasons, most frequent first.
func (s *Summary) finish() {
	sort.SliceStable(s.Reasons, func(i, j int) bool { return s.Reasons[i].Count > s.Reasons[j].Count })
}

// WriteTo prints the summary for an operator.
func (s *Summary) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	safetext.Fprintf(&b, "source: %s\n", s.Source)
	for _, warn := range s.Warnings {
		safetext.Fprintf(&b, "WARNING: %s\n", warn)
	}
	verb := "decrypted"
	if s.DryRun {
		verb = "decryptable (dry run: nothing written)"
	}
	safetext.Fprintf(&b, "found %d: %d %s", s.Found, s.Decrypted, verb)
	if s.Unencrypted > 0 {
		safetext.Fprintf(&b, ", %d stored unencrypted written as they were", s.Unencrypted)
	}
	safetext.Fprintf(&b, ", %d skipped (%d not encrypted, %d other provider), %d failed\n",
		s.NotEncrypted+s.OtherProvider, s.NotEncrypted, s.OtherProvider, s.Failed)
	for i, r := range s.Reasons {
		if i == maxReasonLines {
			safetext.Fprintf(&b, "  ... and %d more reasons\n", len(s.Reasons)-i)
			break
		}
		safetext.Fprintf(&b, "  failed %d: %s\n    e.g. %s\n", r.Count, r.Text, strings.Join(r.Examples, ", "))
	}
	s.writeDEKs(&b)
	s.writeBackends(&b)
	safetext.Fprintf(&b, "took %s (%.0f objects/s)\n", s.Took.Round(time.Millisecond), s.Rate())
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func (s *Summary) writeDEKs(b *strings.Builder) {
	if len(s.DEKs) == 0 {
		return
	}
	bad := 0
	for _, d := range s.DEKs {
		if d.Err != nil {
			bad++
		}
	}
	safetext.Fprintf(b, "DEKs: %d distinct, %d recovered, %d not\n", len(s.DEKs), len(s.DEKs)-bad, bad)
	for i, d := range s.DEKs {
		if i == maxDEKLines {
			safetext.Fprintf(b, "  ... and %d more\n", len(s.DEKs)-i)
			break
		}
		if d.KeyID == "" {
			safetext.Fprintf(b, "  unreadable header: %v\n", d.Err)
			continue
		}
		state := "recovered"
		if d.Err != nil {
			state = "NOT recovered"
		}
		if d.Officers != nil {
			safetext.Fprintf(b, "  %s: %s, %s\n", d.KeyID, describeOfficers(*d.Officers), state)
			continue
		}
		safetext.Fprintf(b, "  %s: %d of %s, %s\n", d.KeyID, d.Threshold, strings.Join(d.Backends, ","), state)
	}
}

func (s *Summary) writeBackends(b *strings.Builder) {
	configured := map[string]bool{}
	for _, st := range s.Backends {
		configured[st.Name] = true
		switch {
		case st.Err != nil:
			safetext.Fprintf(b, "backend %s: skipped: %v\n", st.Name, st.Err)
			continue
		case st.Unwraps > 0:
			safetext.Fprintf(b, "backend %s: used, unwrapped %s", st.Name, plural(st.Unwraps, "share"))
		default:
			safetext.Fprintf(b, "backend %s: not used", st.Name)
		}
		if st.UnwrapFailures > 0 {
			safetext.Fprintf(b, ", %s failed", plural(st.UnwrapFailures, "unwrap"))
		}
		if st.UnwrapsCancelled > 0 {
			safetext.Fprintf(b, ", %s not needed (called off: enough others answered first)", plural(st.UnwrapsCancelled, "unwrap"))
		}
		if st.ProbeErr != nil {
			safetext.Fprintf(b, " (probe at start failed: %v)", st.ProbeErr)
		}
		b.WriteString("\n")
	}
	var missing []string
	seen := map[string]bool{}
	for _, d := range s.DEKs {
		for _, n := range d.Backends {
			if !configured[n] && !seen[n] {
				seen[n] = true
				missing = append(missing, n)
			}
		}
	}
	if len(missing) > 0 && len(s.Backends) > 0 {
		sort.Strings(missing)
		safetext.Fprintf(b, "backends named by the data but not configured: %s\n", strings.Join(missing, ", "))
	}
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
