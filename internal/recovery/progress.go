package recovery

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progressLine says how far a long run got: rewritten in place on a
// terminal, a line at a time otherwise (a log file, a pipe).
type progressLine struct {
	w     io.Writer
	what  string // "recover", "drill"
	start time.Time
	tty   bool
	shown bool
}

func newProgressLine(w io.Writer, what string, start time.Time) *progressLine {
	return &progressLine{w: w, what: what, start: start, tty: isTerminal(w)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// show says done of total (0: not known) items, the rate, the time left
// and the failures so far.
func (l *progressLine) show(done, total int64, items string, failed int64) {
	rate := float64(done) / time.Since(l.start).Seconds()
	s := fmt.Sprintf("%s: %d", l.what, done)
	if total > 0 {
		s += fmt.Sprintf("/%d", total)
	}
	s += fmt.Sprintf(" %s, %.0f %s/s", items, rate, items)
	if total > done && rate > 0 {
		eta := time.Duration(float64(total-done) / rate * float64(time.Second))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	if failed >= 0 {
		s += fmt.Sprintf(", %d failed", failed)
	}
	if l.tty {
		// Back to the start of the line, and clear what a longer one left.
		fmt.Fprintf(l.w, "\r%s\x1b[K", s)
		l.shown = true
		return
	}
	fmt.Fprintln(l.w, s)
}

// end leaves the terminal's line for what comes next.
func (l *progressLine) end() {
	if l.tty && l.shown {
		fmt.Fprintln(l.w)
	}
}
