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
	// Workers decrypt in parallel (default: twice the CPUs). Memory
	// grows with them: each holds an object, and [queuePerWorker] more
	// wait per worker.
	Workers int
	// UnwrapTimeout bounds the unwrap of one DEK (default 60s).
	UnwrapTimeout time.Duration
	// Progress, if set, gets a line every ProgressEvery (default 2s)
	// while objects are being decrypted.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// aborter is a Sink that can end a run whose source failed without
// acting as if it had finished ([DirSink.Abort]).
type aborter interface{ Abort() error }

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
	written  bool // by the Sink's PutUnordered
}

// Run reads opts.Source, decrypts and writes, one bounded batch at a
// time: memory does not grow with the number of objects. It returns an
// error when the source could not be read to the end (what was read
// before may have been written, and is made durable); per-object failures are in the
// summary, and Summary.OK says whether there were any.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	start := time.Now()
	if err := checkFIPS(); err != nil {
		return nil, err
	}
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
	sum := &Summary{DryRun: opts.Sink == nil, reasons: map[string]*Reason{}}
	dec := NewDecrypter(ctx, opts.Envelope, DecrypterOptions{Provider: opts.Provider, UnwrapTimeout: opts.UnwrapTimeout})
	p := newPipeline(ctx, opts, sel, dec, sum)
	stop := p.progress(start)
	scan, err := opts.Source.Scan(ctx, ScanRequest{Prefix: sel.scanPrefix(), Keep: sel.keep, Total: p.setTotal, Visit: p.submit})
	p.wait()
	stop()
	if err != nil && ctx.Err() == nil {
		if a, ok := opts.Sink.(aborter); ok {
			err = errors.Join(err, a.Abort())
		}
		return nil, err
	}
	if scan != nil {
		sum.Source, sum.Revision, sum.Warnings, sum.Damaged = scan.Describe, scan.Revision, scan.Warnings, scan.Damaged
		for _, bad := range scan.Bad {
			sum.Found++
			sum.fail(bad.Ref, bad.Err)
		}
	}
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
	obj, err := decode(plain, p.opts.Sink != nil)
	if err == nil {
		err = obj.prepare(k, p.opts.KeepOwnerReferences)
	}
	if err == nil && p.opts.Sink != nil {
		r.rendered, err = obj.render(p.opts.Sink.Format())
	}
	if u, ok := p.opts.Sink.(UnorderedSink); ok && err == nil {
		if r.written, err = u.PutUnordered(k, r.rendered); r.written {
			r.rendered = nil
		}
	}
	if err != nil {
		r.outcome, r.err = failed, err
	}
	return r
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
