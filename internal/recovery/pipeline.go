package recovery

import (
	"cmp"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queuePerWorker is how many objects per worker may be read and not yet
// written: enough to keep the workers busy while one slow object holds
// up the order of writing.
const queuePerWorker = 16

// pipeline decrypts objects in parallel and accounts for them (writes
// them) in the order the source read them, with a fixed number in
// flight: a source that reads faster waits in submit.
type pipeline struct {
	ctx  context.Context
	opts Options
	sel  *selector
	dec  *Decrypter
	sum  *Summary // written by write only, until wait returns

	jobs    chan *job // to the workers
	order   chan *job // to the writer, in the order read
	workers sync.WaitGroup
	written chan struct{}

	done, bad, total atomic.Int64
}

// job is one object in flight; out gets its result.
type job struct {
	kv  KV
	out chan result
}

func newPipeline(ctx context.Context, opts Options, sel *selector, dec *Decrypter, sum *Summary) *pipeline {
	n := opts.Workers * queuePerWorker
	p := &pipeline{ctx: ctx, opts: opts, sel: sel, dec: dec, sum: sum,
		jobs: make(chan *job, n), order: make(chan *job, n), written: make(chan struct{})}
	for range opts.Workers {
		p.workers.Add(1)
		go p.work()
	}
	go p.write()
	return p
}

func (p *pipeline) work() {
	defer p.workers.Done()
	for j := range p.jobs {
		r := p.one(p.ctx, j.kv)
		if r.outcome == failed {
			p.bad.Add(1)
		}
		j.out <- r
	}
}

// write accounts for each result in the order read.
func (p *pipeline) write() {
	defer close(p.written)
	for j := range p.order {
		p.sum.account(<-j.out, p.opts.Sink)
		p.done.Add(1)
	}
}

// submit queues kv, waiting while the queue is full; it is the Source's
// [ScanRequest.Visit].
func (p *pipeline) submit(kv KV) error {
	j := &job{kv: kv, out: make(chan result, 1)}
	select {
	case p.order <- j:
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
	// Never blocks for long: the workers drain jobs whatever the writer does.
	p.jobs <- j
	return nil
}

// wait ends the pipeline once everything submitted is written.
func (p *pipeline) wait() {
	close(p.jobs)
	close(p.order)
	p.workers.Wait()
	<-p.written
}

func (p *pipeline) setTotal(n int) { p.total.Store(int64(n)) }

// progressEvery is how often a long run (recover, unless ProgressEvery
// says otherwise, and drill) says how far it got.
const progressEvery = 2 * time.Second

// progress shows how far the run got every ProgressEvery until stop is
// called.
func (p *pipeline) progress(start time.Time) (stop func()) {
	if p.opts.Progress == nil {
		return func() {}
	}
	line := newProgressLine(p.opts.Progress, "recover", start)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(cmp.Or(p.opts.ProgressEvery, progressEvery))
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				line.show(p.done.Load(), p.total.Load(), "objects", p.bad.Load())
			}
		}
	}()
	return func() { close(quit); wg.Wait(); line.end() }
}
