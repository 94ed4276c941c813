package recovery

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/safetext"
)

// A custody drill: find every DEK that protects stored data (from the
// headers beside the objects, with no object decrypted), ask every
// backend that holds a share of it, and report how many more backends
// each DEK can lose.

// Driller is what a drill needs of the envelope: a session per DEK id,
// so that copies of one header share their backends' answers.
type Driller interface {
	NewDrillSession() *envelope.DrillSession
}

// DrillOptions configures a drill.
type DrillOptions struct {
	// Source is the stored data (a snapshot or a live etcd); nil drills
	// the state dir only.
	Source Source
	Prefix string // etcd prefix, default /registry
	// StateDir adds the plugin's current DEK and those set aside.
	StateDir string
	// Envelope drills the custodians; nil drills the officers only.
	Envelope Driller
	// Officers, if set, checks each header's officers' branch too.
	Officers *OfficerDrill
	// CheckTimeout bounds the backends' answers for one header (default
	// envelope.DefaultUnwrapTimeout).
	CheckTimeout time.Duration
	// Progress, if set, gets a line now and then on long runs.
	Progress io.Writer
}

// DrilledDEK is one DEK's result.
type DrilledDEK struct {
	envelope.DEKCheck
	Objects   int            // stored objects under it
	Resources map[string]int // by resource ("secrets", ...)
	From      []string       // where it was found: "etcd", "state: FILE"
	// Err: the header itself is unusable (malformed, below the floor), or
	// was not drilled (Tampered).
	Err error
	// Tampered: a header that names a DEK whose genuine header checked
	// out, but differs from it; stored objects beside it do not decrypt.
	// It says nothing about custody, and does not count in ExitCode.
	Tampered bool
	// NotDrilled: one copy too many of a header needing new backend
	// calls, while no header of its DEK id checked out: ExitCode counts
	// it as a margin it could not check (1), not as unrecoverable.
	NotDrilled bool
	// OfficersOnly: the custodians were not drilled (no envelope), so
	// Shares is empty and Margin means nothing.
	OfficersOnly bool
	// Officers is its officers' branch (DrillOptions.Officers).
	Officers *OfficerBranch
}

// Unrecoverable reports whether no quorum can open the DEK now.
func (d DrilledDEK) Unrecoverable() bool {
	return !d.Tampered && !d.NotDrilled && (d.Err != nil || !d.OfficersOnly && d.Margin() < 0)
}

// DrillReport is what a drill found.
type DrillReport struct {
	DEKs []DrilledDEK // newest generation first
	// NotTrousseau counts KMS values whose header could not be read as
	// Trousseau's (another provider, damaged values).
	NotTrousseau int
	Describe     string
}

// ExitCode is 2 when some DEK is unrecoverable, 1 when some DEK has a
// margin below minMargin or an officers' branch with a [OfficerBranch.Problem],
// 0 otherwise.
func (r *DrillReport) ExitCode(minMargin int) int {
	code := 0
	for _, d := range r.DEKs {
		switch {
		case d.Tampered:
		case d.Officers != nil && d.Officers.Problem() != "" && !d.Unrecoverable():
			code = max(code, 1)
		case d.OfficersOnly && d.Err == nil:
		case d.NotDrilled:
			// No header of its DEK id checked out: margin unknown.
			code = max(code, 1)
		case d.Unrecoverable():
			return 2
		case d.Margin() < minMargin:
			code = 1
		}
	}
	return code
}

// Drill runs a drill: one unwrap per (DEK, backend).
func Drill(ctx context.Context, opts DrillOptions) (*DrillReport, error) {
	if opts.Envelope == nil && opts.Officers == nil {
		return nil, fmt.Errorf("recovery: drill needs an envelope or officers to check")
	}
	found := drillIndex{}
	report := &DrillReport{}
	if opts.StateDir != "" {
		headers, files, err := envelope.StateHeaders(opts.StateDir)
		if err != nil {
			return nil, err
		}
		for i, h := range headers {
			found.add(h, statePrefix+files[i], "")
		}
	}
	if opts.Source != nil {
		if err := found.scan(ctx, opts, report); err != nil {
			return nil, err
		}
	}
	if len(found) == 0 {
		return nil, envelope.ErrDrillNoDEK
	}
	report.DEKs = found.drill(ctx, opts)
	return report, nil
}

// drillIndex groups what was found by header.
type drillIndex map[[32]byte]*drillEntry

// statePrefix starts where a header read from the state dir came from.
const statePrefix = "state: "

type drillEntry struct {
	header  []byte
	objects int
	res     map[string]int
	from    []string
}

func (x drillIndex) add(header []byte, from, resource string) {
	sum := sha256.Sum256(header)
	e := x[sum]
	if e == nil {
		e = &drillEntry{header: bytes.Clone(header), res: map[string]int{}}
		x[sum] = e
	}
	if resource != "" {
		e.objects++
		e.res[resource]++
	}
	if len(e.from) == 0 || e.from[len(e.from)-1] != from {
		e.from = append(e.from, from)
	}
}

// scan reads every stored value and notes the header of each KMS one:
// what it keeps grows with the distinct headers, not the values.
func (x drillIndex) scan(ctx context.Context, opts DrillOptions, report *DrillReport) error {
	prefix := cmp.Or(opts.Prefix, DefaultPrefix)
	var seen, total int64
	var line *progressLine
	last := time.Now()
	if opts.Progress != nil {
		line = newProgressLine(opts.Progress, "drill", last)
	}
	visit := func(kv KV) error {
		if seen++; line != nil && time.Since(last) >= progressEvery {
			last = time.Now()
			line.show(seen, total, "values", -1)
		}
		x.note(prefix, kv, report)
		return nil
	}
	sc, err := opts.Source.Scan(ctx, ScanRequest{Prefix: normalizePrefix(prefix), Total: func(n int) { total = int64(n) }, Visit: visit})
	if line != nil {
		line.end()
	}
	if err != nil {
		return err
	}
	report.Describe = sc.Describe
	if opts.Progress != nil {
		safetext.Fprintf(opts.Progress, "drill: read %d values from %s\n", seen, sc.Describe)
	}
	return nil
}

// note adds the header of one stored value, if it has one.
func (x drillIndex) note(prefix string, kv KV, report *DrillReport) {
	header, ok := StoredHeader(kv.Value)
	if !ok {
		if v, err := ParseValue(kv.Value); err == nil && (v.Kind == ValueKMSv2 || v.Kind == ValueKMSv1) {
			report.NotTrousseau++
		}
		return
	}
	resource := ""
	if k, err := ParseKey(prefix, kv.Key); err == nil {
		resource = k.GroupResource()
	}
	x.add(header, "etcd", resource)
}

// byDEKID groups the headers by the DEK id they name (headers that do not
// parse are groups of their own). Within a group the state dir's header
// comes first (an etcd writer cannot plant one there), then those stored
// beside most objects.
func (x drillIndex) byDEKID() [][]*drillEntry {
	groups := map[string][]*drillEntry{}
	for sum, e := range x {
		id := string(sum[:])
		if h, err := envelope.ParseHeader(e.header); err == nil {
			id = string(h.DEKID[:])
		}
		groups[id] = append(groups[id], e)
	}
	out := make([][]*drillEntry, 0, len(groups))
	for _, g := range groups {
		sort.SliceStable(g, func(i, j int) bool {
			if si, sj := g[i].fromState(), g[j].fromState(); si != sj {
				return si
			}
			if g[i].objects != g[j].objects {
				return g[i].objects > g[j].objects
			}
			return bytes.Compare(g[i].header, g[j].header) < 0
		})
		out = append(out, g)
	}
	return out
}

func (e *drillEntry) fromState() bool {
	for _, f := range e.from {
		if strings.HasPrefix(f, statePrefix) {
			return true
		}
	}
	return false
}

// StoredHeader finds Trousseau's header in a stored KMS value: the
// annotation of a v2 EncryptedObject, or the front of a v1 encrypted DEK.
func StoredHeader(b []byte) ([]byte, bool) {
	v, err := ParseValue(b)
	if err != nil {
		return nil, false
	}
	switch v.Kind {
	case ValueKMSv2:
		var obj kmstypes.EncryptedObject
		if proto.Unmarshal(b[len(kmsV2Prefix)+len(v.Provider)+1:], &obj) != nil {
			return nil, false
		}
		h, ok := obj.Annotations[envelope.SharesAnnotation]
		return h, ok && len(h) > 0
	case ValueKMSv1:
		rest := b[len(kmsV1Prefix)+len(v.Provider)+1:]
		if len(rest) < 2 || int(binary.BigEndian.Uint16(rest)) > len(rest)-2 {
			return nil, false
		}
		header, _, err := envelope.ParseCombined(rest[2 : 2+binary.BigEndian.Uint16(rest)])
		return header, err == nil
	}
	return nil, false
}

// maxVariantDrills bounds the headers of one DEK id that make new
// backend calls: any header can be copied with its wrapped shares
// changed, and each such copy would cost one unwrap per backend. Copies
// that reuse shares already unwrapped are checked without asking.
const maxVariantDrills = 3

// drill checks every DEK found, one at a time (each asks its backends in
// parallel), and sorts them newest first.
func (x drillIndex) drill(ctx context.Context, opts DrillOptions) []DrilledDEK {
	out := make([]DrilledDEK, 0, len(x))
	start := time.Now()
	tick := newTicker(opts.Progress)
	for _, group := range x.byDEKID() {
		tick.say("drill: drilled %d of %d DEKs", len(out), len(x))
		var drilled []DrilledDEK
		if opts.Envelope != nil {
			drilled = drillGroup(ctx, opts, group)
		} else {
			drilled = officersOnly(group)
		}
		if opts.Officers != nil {
			addOfficers(ctx, opts.Officers, group, drilled)
		}
		out = append(out, drilled...)
	}
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "drill: drilled %d DEKs in %s\n", len(out), time.Since(start).Round(time.Millisecond))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Generation != out[j].Generation {
			return out[i].Generation > out[j].Generation
		}
		return out[i].KeyID < out[j].KeyID
	})
	return out
}

// drillGroup drills the headers that name one DEK id in one session, so
// each wrapped share is unwrapped once. Once one header checks out (its
// commitment covers every byte), the others are tampered copies. A copy
// whose shares agree with each other but not with it is tampered too,
// whichever order they come in: custodians are never blamed for it.
func drillGroup(ctx context.Context, opts DrillOptions, group []*drillEntry) []DrilledDEK {
	session := opts.Envelope.NewDrillSession()
	defer session.Close()
	timeout := cmp.Or(opts.CheckTimeout, envelope.DefaultUnwrapTimeout)
	out := make([]DrilledDEK, 0, len(group))
	var genuine *envelope.DEKCheck
	asked := 0
	for _, e := range group {
		d := DrilledDEK{Objects: e.objects, Resources: e.res, From: e.from}
		unasked := session.Unasked(e.header)
		switch {
		case genuine != nil:
			d.DEKCheck = envelope.DEKCheck{KeyID: genuine.KeyID, Generation: genuine.Generation, Threshold: genuine.Threshold}
			d.Err = fmt.Errorf("a tampered copy of the header of DEK %s (stored beside %d objects): not drilled", genuine.KeyID, e.objects)
			d.Tampered = true
		case unasked > 0 && asked >= maxVariantDrills:
			d.Err = fmt.Errorf("one of %d different headers naming one DEK id (stored beside %d objects): not drilled", len(group), e.objects)
			d.NotDrilled = true
		default:
			if unasked > 0 {
				asked++
			}
			checkCtx, cancel := context.WithTimeout(ctx, timeout)
			d.DEKCheck, d.Err = session.Check(checkCtx, e.header)
			cancel()
			switch {
			case d.Err == nil && d.Working > 0:
				genuine = &d.DEKCheck
			case d.Err == nil && d.HeaderTampered && e.fromState():
				// No etcd writer can plant the state's header: shares that
				// agree without fitting it are k custodians colluding.
				d.Err = fmt.Errorf("the state dir's header of DEK %s does not fit shares that agree with each other: k or more custodians are lying", d.KeyID)
			case d.Err == nil && d.HeaderTampered:
				d.Tampered = true
				d.Err = fmt.Errorf("a tampered header of DEK %s (stored beside %d objects): the backends' shares agree with each other but not with it", d.KeyID, e.objects)
			}
		}
		out = append(out, d)
	}
	if genuine != nil {
		// Copies drilled, or skipped, before the genuine header was found.
		for i := range out {
			if !out[i].Tampered && out[i].Working == 0 {
				out[i].Tampered, out[i].NotDrilled = true, false
				out[i].Err = fmt.Errorf("a tampered copy of the header of DEK %s (stored beside %d objects): no share fits it", genuine.KeyID, out[i].Objects)
			}
		}
	}
	return out
}

// officersOnly describes each header of a group from the header alone:
// with no envelope, no custodian is asked.
func officersOnly(group []*drillEntry) []DrilledDEK {
	out := make([]DrilledDEK, 0, len(group))
	for _, e := range group {
		d := DrilledDEK{Objects: e.objects, Resources: e.res, From: e.from, OfficersOnly: true}
		h, err := envelope.ParseHeader(e.header)
		if err != nil {
			d.Err = err
		} else {
			d.DEKCheck = envelope.DEKCheck{KeyID: h.KeyID(), Generation: h.Generation, Created: h.Created, Threshold: h.Threshold}
		}
		out = append(out, d)
	}
	return out
}

// addOfficers drills the officers' branch of each header of a group.
func addOfficers(ctx context.Context, o *OfficerDrill, group []*drillEntry, drilled []DrilledDEK) {
	for i, e := range group {
		if h, err := envelope.ParseHeader(e.header); err == nil {
			drilled[i].Officers = checkOfficers(ctx, e.header, h, o)
		}
	}
}

// ticker writes a progress line at most once per progressEvery.
type ticker struct {
	w    io.Writer
	last time.Time
}

func newTicker(w io.Writer) *ticker { return &ticker{w: w, last: time.Now()} }

func (t *ticker) say(format string, args ...any) {
	if t.w == nil || time.Since(t.last) < progressEvery {
		return
	}
	t.last = time.Now()
	fmt.Fprintf(t.w, format+"\n", args...)
}
