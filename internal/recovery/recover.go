// Package recovery is Trousseau's disaster recovery: it reads an etcd
// snapshot file (or a running etcd), decrypts every KMS-encrypted object
// with whatever quorum of backends it can reach, and writes the objects
// out as manifests for kubectl apply, with no cluster running.
//
// Values are decrypted by kube-apiserver's own transformer code (the
// prefix transformer, the KMS v2 and v1 envelope transformers) with
// Trousseau's envelope as their KMS service, so that what recovery reads
// is what the apiserver would have read.
//
// Use: OpenKeyring from a config, then Run with a Source (SnapshotFile or
// LiveEtcd) and a Sink (DirSink, StreamSink, or none for a dry run).
package recovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options is one recovery run.
type Options struct {
	Source   Source
	Envelope Envelope
	// Prefix is kube-apiserver's --etcd-prefix (default "/registry").
	Prefix string
	// Resources selects resources by their etcd key segment ("secrets",
	// "configmaps"; custom resources as "<plural>.<group>"); empty
	// selects every resource that holds KMS-encrypted values.
	Resources []string
	// Namespace selects one namespace; "" selects all.
	Namespace string
	// Provider selects one KMS provider name; "" selects any.
	Provider string
	// IncludeUnencrypted also writes the selected objects that are
	// stored in the clear (written before encryption was turned on).
	IncludeUnencrypted bool
	// KeepOwnerReferences keeps metadata.ownerReferences, which name
	// owners by UIDs that a new cluster does not have.
	KeepOwnerReferences bool
	// Sink receives the objects; nil is a dry run: everything is
	// decrypted and decoded, nothing written.
	Sink Sink
	// Workers decrypt in parallel (default: twice the CPUs).
	Workers int
	// UnwrapTimeout bounds the unwrap of one DEK (default 60s).
	UnwrapTimeout time.Duration
	// Progress, if set, gets a line every ProgressEvery (default 2s)
	// while objects are being decrypted.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// outcome is what became of one selected key.
type outcome int

const (
	decrypted outcome = iota
	plainWritten
	notEncrypted
	otherProvider
	failed
	ignored
)

type result struct {
	key      string
	k        Key
	outcome  outcome
	err      error
	rendered []byte
}

// Run reads opts.Source, decrypts and writes. It returns an error only
// when nothing could be read; per-object failures are in the summary,
// and Summary.OK says whether there were any.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	start := time.Now()
	if opts.Source == nil || opts.Envelope == nil {
		return nil, errors.New("recovery: a Source and an Envelope are required")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Workers <= 0 {
		opts.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	sel, err := newSelector(opts)
	if err != nil {
		return nil, err
	}
	scan, err := opts.Source.Scan(ctx, sel.scanPrefix(), sel.keep)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Source: scan.Describe, Revision: scan.Revision, Warnings: scan.Warnings, Damaged: scan.Damaged, DryRun: opts.Sink == nil, reasons: map[string]*Reason{}}
	for _, bad := range scan.Bad {
		sum.Found++
		sum.fail(bad.Ref, bad.Err)
	}
	dec := NewDecrypter(ctx, opts.Envelope, DecrypterOptions{Provider: opts.Provider, UnwrapTimeout: opts.UnwrapTimeout})
	p := &pipeline{opts: opts, sel: sel, dec: dec}
	results := p.start(ctx, scan.KVs)
	stop := p.progress(len(scan.KVs), start)
	// Results arrive in any order; they are written in key order.
	pending := map[int]result{}
	next := 0
	for in := range results {
		pending[in.idx] = in.result
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			sum.account(r, opts.Sink)
		}
	}
	stop()
	if opts.Sink != nil {
		if err := opts.Sink.Close(); err != nil {
			sum.Warnings = append(sum.Warnings, fmt.Sprintf("output: %v", err))
			sum.outputFailed = true
		}
	}
	sum.finish()
	sum.DEKs = dec.DEKs()
	if kr, ok := opts.Envelope.(*Keyring); ok {
		sum.Backends = kr.Status()
	}
	sum.Took = time.Since(start)
	if err := ctx.Err(); err != nil {
		return sum, fmt.Errorf("recovery interrupted: %w", err)
	}
	return sum, nil
}

type indexed struct {
	idx int
	result
}

type pipeline struct {
	opts Options
	sel  *selector
	dec  *Decrypter
	done atomic.Int64
	bad  atomic.Int64
}

// start decrypts kvs with a bounded pool of workers.
func (p *pipeline) start(ctx context.Context, kvs []KV) <-chan indexed {
	jobs := make(chan int)
	out := make(chan indexed, p.opts.Workers)
	var wg sync.WaitGroup
	for range p.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				r := p.one(ctx, kvs[i])
				if r.outcome == failed {
					p.bad.Add(1)
				}
				p.done.Add(1)
				out <- indexed{i, r}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		for i := range kvs {
			select {
			case jobs <- i:
			case <-ctx.Done():
				// The rest are reported as not attempted.
				for j := i; j < len(kvs); j++ {
					out <- indexed{j, result{key: kvs[j].Key, outcome: failed, err: ctx.Err()}}
				}
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// one decrypts, decodes and renders one value.
func (p *pipeline) one(ctx context.Context, kv KV) result {
	r := result{key: kv.Key}
	k, kerr := ParseKey(p.opts.Prefix, kv.Key)
	r.k = k
	plain, err := p.dec.Decrypt(ctx, kv.Key, kv.Value)
	switch {
	case errors.Is(err, ErrNotEncrypted):
		if kerr != nil || !p.opts.IncludeUnencrypted {
			r.outcome = notEncrypted
			if kerr != nil {
				r.outcome = ignored
			}
			return r
		}
		plain, r.outcome = kv.Value, plainWritten
	case errors.Is(err, ErrOtherProvider):
		r.outcome = otherProvider
		return r
	case err != nil:
		r.outcome, r.err = failed, err
		return r
	case kerr != nil:
		r.outcome, r.err = failed, fmt.Errorf("decrypted, but the key is not <prefix>/<resource>/[<namespace>/]<name>: %v", kerr)
		return r
	default:
		r.outcome = decrypted
	}
	obj, err := decodeObject(plain)
	if err == nil {
		err = obj.prepare(k, p.opts.KeepOwnerReferences)
	}
	if err == nil && p.opts.Sink != nil {
		r.rendered, err = obj.render(p.opts.Sink.Format())
	}
	if err != nil {
		r.outcome, r.err = failed, err
	}
	return r
}

// progressEvery is how often a long run (recover, unless ProgressEvery
// says otherwise, and drill) says how far it got.
const progressEvery = 2 * time.Second

// progress prints a line every ProgressEvery until stop is called.
func (p *pipeline) progress(total int, start time.Time) (stop func()) {
	if p.opts.Progress == nil {
		return func() {}
	}
	every := p.opts.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				done := p.done.Load()
				rate := float64(done) / time.Since(start).Seconds()
				fmt.Fprintf(p.opts.Progress, "recover: %d/%d objects, %.0f objects/s, %d failed\n", done, total, rate, p.bad.Load())
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// selector is the resource and namespace filter.
type selector struct {
	prefix    string
	resources map[string]bool
	namespace string
}

func newSelector(opts Options) (*selector, error) {
	s := &selector{prefix: opts.Prefix, namespace: opts.Namespace}
	for _, r := range opts.Resources {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if strings.ContainsAny(r, "/\x00") {
			return nil, fmt.Errorf("resource %q: want a resource name such as secrets or widgets.example.com", r)
		}
		if s.resources == nil {
			s.resources = map[string]bool{}
		}
		s.resources[r] = true
	}
	if strings.ContainsAny(opts.Namespace, "/\x00") {
		return nil, fmt.Errorf("namespace %q: invalid", opts.Namespace)
	}
	return s, nil
}

// keep is the filter applied while reading: keys that do not parse are
// kept only when no filter is set (an encrypted value under one is
// reported, not dropped).
func (s *selector) keep(key string) bool {
	k, err := ParseKey(s.prefix, key)
	if err != nil {
		return s.resources == nil && s.namespace == ""
	}
	if s.resources != nil && !s.resources[k.GroupResource()] {
		return false
	}
	return s.namespace == "" || k.Namespace == s.namespace
}

// scanPrefix narrows the read to one resource (and namespace) when the
// filter allows it.
func (s *selector) scanPrefix() string {
	p := strings.TrimSuffix(normalizePrefix(s.prefix), "/")
	if len(s.resources) != 1 {
		return p
	}
	var r string
	for r = range s.resources {
	}
	if res, group, ok := strings.Cut(r, "."); ok {
		p += "/" + group + "/" + res
	} else {
		p += "/" + r
	}
	if s.namespace != "" {
		p += "/" + s.namespace
	}
	return p
}
