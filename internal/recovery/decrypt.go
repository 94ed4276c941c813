package recovery

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"
	envelopev1 "k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/envelope"
)

// Envelope is what recovery needs of Trousseau's envelope: Decrypt only.
// *envelope.Envelope built with no StateDir is one.
type Envelope interface {
	Decrypt(ctx context.Context, ciphertext, header []byte) ([]byte, error)
}

// The errors a value can fail with before or instead of decryption.
var (
	// ErrNotTrousseau: a KMS value whose DEK was not sealed by Trousseau
	// (another plugin registered under a name we were asked to read).
	ErrNotTrousseau = errors.New("not sealed by Trousseau")
	// ErrOtherProvider: a KMS value of a provider name not selected.
	ErrOtherProvider = errors.New("other provider")
	// ErrNotEncrypted: stored in the clear.
	ErrNotEncrypted = errors.New("not encrypted")
)

// apiServerID is what kube-apiserver's transformers record in metrics.
const apiServerID = "trousseau-recover"

// maxProviders bounds the distinct KMS provider names read.
const maxProviders = 64

// v1CacheSize bounds kube-apiserver's KMS v1 DEK cache (it caches one
// entry per DEK it ever wrote; Trousseau's own DEK cache sits below).
const v1CacheSize = 8192

// Decrypter turns stored KMS values back into what kube-apiserver
// encrypted, by running kube-apiserver's own transformers (the prefix
// transformer, the KMS v2 and v1 envelope transformers, AES-GCM and
// HKDF) with Trousseau's envelope behind them as the KMS service.
//
// Each distinct Trousseau header is unwrapped at most once, whether it
// succeeds or not: one value's attempt is shared by every other value
// that carries the same header.
type Decrypter struct {
	env      Envelope
	provider string // "" = any
	baseCtx  context.Context
	timeout  time.Duration

	mu           sync.Mutex
	transformers map[string]*providerTransformer // by provider name
	headers      map[[32]byte]*headerState
}

// providerTransformer is the read path of one provider name, replaced
// after transformerUses values: kube-apiserver's KMS v2 data transformer
// caches a key derived for each etcd key for ten minutes (its reads meet
// the same keys again; recovery never does), which would hold a key per
// object. A new one finds the DEK in the envelope's cache, so no backend
// is asked again.
type providerTransformer struct {
	value.Transformer
	uses int
}

const transformerUses = 4096

// DecrypterOptions tunes a Decrypter.
type DecrypterOptions struct {
	// Provider restricts decryption to values of this KMS provider name
	// (EncryptionConfiguration's kms.name); "" reads any.
	Provider string
	// UnwrapTimeout bounds one header's unwrap (default 60s).
	UnwrapTimeout time.Duration
}

// NewDecrypter returns a Decrypter over env. ctx bounds KMS v1 unwraps,
// whose service interface has no context of its own.
func NewDecrypter(ctx context.Context, env Envelope, opts DecrypterOptions) *Decrypter {
	if opts.UnwrapTimeout <= 0 {
		opts.UnwrapTimeout = 60 * time.Second
	}
	return &Decrypter{
		env: env, provider: opts.Provider, baseCtx: ctx, timeout: opts.UnwrapTimeout,
		transformers: map[string]*providerTransformer{},
		headers:      map[[32]byte]*headerState{},
	}
}

// Decrypt returns the plaintext of a stored value: the bytes
// kube-apiserver encrypted (an object, protobuf or JSON). key is the
// value's etcd key, the authenticated data of its encryption.
func (d *Decrypter) Decrypt(ctx context.Context, key string, stored []byte) ([]byte, error) {
	if err := checkFIPS(); err != nil {
		return nil, err
	}
	v, err := ParseValue(stored)
	if err != nil {
		return nil, err
	}
	switch v.Kind {
	case ValueKMSv2, ValueKMSv1:
	case ValueOtherEncryption:
		return nil, fmt.Errorf("%w: encrypted with %s", ErrOtherProvider, v.Transformer)
	default:
		return nil, ErrNotEncrypted
	}
	if d.provider != "" && v.Provider != d.provider {
		return nil, fmt.Errorf("%w: KMS provider %q", ErrOtherProvider, v.Provider)
	}
	tr, err := d.transformer(v.Provider)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	pt, _, err := tr.TransformFromStorage(ctx, stored, value.DefaultContext(key))
	if err != nil {
		return nil, explain(err)
	}
	return pt, nil
}

// transformer is kube-apiserver's read path for one KMS provider name:
// the prefix transformer over the KMS v2 and v1 envelope transformers,
// as encryptionconfig builds them.
func (d *Decrypter) transformer(name string) (value.Transformer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.transformers[name]; ok && t.uses < transformerUses {
		t.uses++
		return t.Transformer, nil
	}
	if _, ok := d.transformers[name]; !ok && len(d.transformers) >= maxProviders {
		// Damaged data can invent names; a cluster has a handful.
		return nil, fmt.Errorf("%w: KMS provider name %q is one too many (over %d distinct names)", ErrUnknownFormat, name, maxProviders)
	}
	stateFunc := func() (kmsv2.State, error) {
		// Reads need no write state; it only decides staleness.
		return kmsv2.State{KMSProviderName: name}, nil
	}
	t := value.NewPrefixTransformers(nil,
		value.PrefixTransformer{
			Prefix:      []byte(kmsV2Prefix + name + ":"),
			Transformer: kmsv2.NewEnvelopeTransformer(v2Service{d}, name, stateFunc, apiServerID),
		},
		value.PrefixTransformer{
			Prefix:      []byte(kmsV1Prefix + name + ":"),
			Transformer: envelopev1.NewEnvelopeTransformer(v1Service{d}, v1CacheSize, v1DataTransformer),
		},
	)
	d.transformers[name] = &providerTransformer{Transformer: t, uses: 1}
	return t, nil
}

// v1DataTransformer is what kube-apiserver reads KMS v1 data with:
// AES-GCM, falling back to the AES-CBC it wrote before 1.25.
func v1DataTransformer(block cipher.Block) (value.Transformer, error) {
	gcm, err := aestransformer.NewGCMTransformer(block)
	if err != nil {
		return nil, err
	}
	return firstOf{gcm, aestransformer.NewCBCTransformer(block)}, nil
}

// firstOf reads with the first transformer that succeeds (the
// apiserver's unexported unionTransformers).
type firstOf []value.Transformer

func (f firstOf) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	var errs []error
	for i, t := range f {
		out, stale, err := t.TransformFromStorage(ctx, data, dataCtx)
		if err == nil {
			return out, stale || i != 0, nil
		}
		errs = append(errs, err)
	}
	return nil, false, errors.Join(errs...)
}

func (f firstOf) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return nil, errReadOnly
}

var errReadOnly = errors.New("recovery decrypts only")

// v2Service is the KMS v2 service kube-apiserver's transformer calls: the
// plugin's Decrypt, in process.
type v2Service struct{ d *Decrypter }

var _ kmsservice.Service = v2Service{}

func (s v2Service) Decrypt(ctx context.Context, _ string, req *kmsservice.DecryptRequest) ([]byte, error) {
	header, ok := req.Annotations[envelope.SharesAnnotation]
	if !ok {
		return nil, fmt.Errorf("%w: annotation %s is missing", ErrNotTrousseau, envelope.SharesAnnotation)
	}
	return s.d.unwrap(ctx, req.Ciphertext, header)
}

func (v2Service) Encrypt(context.Context, string, []byte) (*kmsservice.EncryptResponse, error) {
	return nil, errReadOnly
}

func (v2Service) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: apiServerID}, nil
}

// v1Service is the KMS v1 service: the DEK blob is Trousseau's combined
// header and ciphertext.
type v1Service struct{ d *Decrypter }

var _ envelopev1.Service = v1Service{}

func (s v1Service) Decrypt(blob []byte) ([]byte, error) {
	if !bytes.HasPrefix(blob, []byte("TRS1")) {
		return nil, fmt.Errorf("%w: KMS v1 DEK is not a Trousseau blob", ErrNotTrousseau)
	}
	header, ct, err := envelope.ParseCombined(blob)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.d.baseCtx, s.d.timeout)
	defer cancel()
	return s.d.unwrap(ctx, ct, header)
}

func (v1Service) Encrypt([]byte) ([]byte, error) { return nil, errReadOnly }

// headerState is the shared outcome of a header's first unwrap.
type headerState struct {
	done     chan struct{}
	err      error // set when the DEK itself could not be recovered
	info     *envelope.Header
	officers *envelope.OfficerReport // through the officers only
}

// unwrap opens a seed (or v1 DEK) with Trousseau's envelope. The first
// value of each header does the unwrap; the others wait for it, then get
// its error, or decrypt from the envelope's DEK cache.
func (d *Decrypter) unwrap(ctx context.Context, ct, header []byte) ([]byte, error) {
	hash := sha256.Sum256(header)
	d.mu.Lock()
	st, seen := d.headers[hash]
	if !seen {
		st = &headerState{done: make(chan struct{})}
		d.headers[hash] = st
	}
	d.mu.Unlock()
	if !seen {
		return d.firstUnwrap(ctx, st, ct, header)
	}
	select {
	case <-st.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if st.err != nil {
		return nil, st.err
	}
	return d.env.Decrypt(ctx, ct, header)
}

// firstUnwrap recovers a header's DEK (through the envelope, which
// caches it) and records a failure that every value of the header shares:
// a header that does not parse, or a quorum that cannot be reached.
func (d *Decrypter) firstUnwrap(ctx context.Context, st *headerState, ct, header []byte) ([]byte, error) {
	defer close(st.done)
	h, err := envelope.ParseHeader(header)
	if err != nil {
		st.err = err
		return nil, err
	}
	st.info = h
	if p, ok := d.env.(officerReporter); ok {
		rep := p.Report(ctx, header) // the keyring keeps the DEK for Decrypt
		st.officers = &rep
		if rep.Err != nil {
			st.err = &OfficerError{Report: rep}
			return nil, st.err
		}
	}
	pt, err := d.env.Decrypt(ctx, ct, header)
	if qe := (*envelope.QuorumError)(nil); errors.As(err, &qe) {
		st.err = &DEKError{KeyID: h.KeyID(), Header: h, Quorum: qe}
		return nil, st.err
	}
	return pt, err
}

// DEKError says which DEK could not be recovered and why, backend by
// backend. It holds no key material.
type DEKError struct {
	KeyID  string
	Header *envelope.Header
	Quorum *envelope.QuorumError
}

func (e *DEKError) Error() string {
	h := e.Header
	names := make([]string, 0, len(h.Shares))
	for _, s := range h.Shares {
		names = append(names, s.Backend)
	}
	var failed, answered []string
	answered = append(answered, e.Quorum.Unwrapped...)
	for n, err := range e.Quorum.Failures {
		failed = append(failed, fmt.Sprintf("%s: %v", n, err))
	}
	sort.Strings(failed)
	sort.Strings(answered)
	msg := fmt.Sprintf("quorum not reached for DEK %s: it needs %d of %d backends (%s)",
		e.KeyID, h.Threshold, len(h.Shares), strings.Join(names, ", "))
	if len(answered) > 0 {
		msg += fmt.Sprintf(", got %d (%s)", len(answered), strings.Join(answered, ", "))
	}
	if e.Quorum.Mismatch {
		msg += "; the shares returned do not combine to the committed key"
	}
	if len(failed) > 0 {
		msg += "; " + strings.Join(failed, "; ")
	}
	return msg
}

func (e *DEKError) Unwrap() error { return e.Quorum }

// explain strips the wrapping kube-apiserver's transformers add around
// our own errors, which say more.
func explain(err error) error {
	var de *DEKError
	var oe *OfficerError
	switch {
	case errors.As(err, &de):
		return de
	case errors.As(err, &oe):
		return oe
	case errors.Is(err, ErrNotTrousseau):
		return fmt.Errorf("%w: %v", ErrOtherProvider, err)
	}
	return err
}

// DEKs describes the distinct headers met so far: for the summary.
func (d *Decrypter) DEKs() []DEKInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []DEKInfo
	for _, st := range d.headers {
		select {
		case <-st.done:
		default:
			continue
		}
		if st.info == nil {
			out = append(out, DEKInfo{Err: st.err})
			continue
		}
		info := DEKInfo{KeyID: st.info.KeyID(), Threshold: st.info.Threshold, Err: st.err, Officers: st.officers}
		for _, s := range st.info.Shares {
			info.Backends = append(info.Backends, s.Backend)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
}

// DEKInfo is one distinct Trousseau DEK found in the data.
type DEKInfo struct {
	KeyID     string
	Threshold int
	Backends  []string // the header's backends, share order
	Err       error    // why it could not be recovered, if it could not
	// Officers is how it did through the officers, when recovery went
	// through them ([envelope.OfficerKeyring]).
	Officers *envelope.OfficerReport
}
