package grpcserver_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Text only the log may hold: what an AWS error and an AWS key identity
// carry (account, role, key).
const (
	leakedRole = "arn:aws:iam::123456789012:role/zz-secret-role"
	leakedKey  = "arn:aws:kms:eu-west-1:123456789012:key/zz-secret-key"
)

// refusesWrap answers probes with another key than the current DEK's
// share names, so a rotation is due, and refuses to wrap with an error
// that names a role and a key, as AWS KMS does.
type refusesWrap struct {
	kmsclients.Backend
	refuse *atomic.Bool
}

func (r refusesWrap) Probe(ctx context.Context) (string, error) {
	if r.refuse.Load() {
		return leakedKey, nil
	}
	return r.Backend.Probe(ctx)
}

func (r refusesWrap) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if r.refuse.Load() {
		src := kmsclients.Source{Backend: "awskms", Name: r.Name()}
		return kmsclients.Wrapped{}, src.Errorf(kmsclients.OpWrap, kmsclients.ErrPermission,
			"AccessDeniedException: User: %s is not authorized to perform kms:Encrypt on resource %s", leakedRole, leakedKey)
	}
	return r.Backend.Wrap(ctx, share, aad)
}

// clock is a settable clock, for an overdue rotation without waiting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// What /readyz says of a failed rotation or a DEK that cannot be made,
// which anyone who reaches the health port can read, is backend names
// and error kinds; the error text and key identities stay in the log.
func TestReadyzShowsNoBackendErrorText(t *testing.T) {
	t.Run("overdue rotation", func(t *testing.T) {
		h, refuse := newRefusingHarness(t)
		clk := &clock{t: time.Now()}
		h.now = clk.now
		h.start()
		refuse.Store(true)
		h.probe()
		clk.add(grpcserver.RotationOverdue + time.Minute)
		checkReadyz(t, h, 200, "DEK rotation due since", "local-c key changed", "rotation failed: local-c permission")
	})
	t.Run("no DEK yet", func(t *testing.T) {
		h, refuse := newRefusingHarness(t)
		refuse.Store(true)
		h.startNoWait()
		h.probe()
		checkReadyz(t, h, 503, "no DEK yet", "no usable DEK: cannot create or unlock the DEK: local-c permission")
	})
}

// newRefusingHarness is a harness whose backend local-c is a refusesWrap.
func newRefusingHarness(t *testing.T) (*harness, *atomic.Bool) {
	h := newHarness(t)
	refuse := &atomic.Bool{}
	h.wrap = func(i int, b kmsclients.Backend) kmsclients.Backend {
		if i == 2 {
			return refusesWrap{b, refuse}
		}
		return b
	}
	return h, refuse
}

func checkReadyz(t *testing.T, h *harness, wantCode int, wants ...string) {
	t.Helper()
	code, body := get(t, "http://"+h.plugin.HTTPAddr()+"/readyz")
	if code != wantCode {
		t.Fatalf("/readyz %d, want %d:\n%s", code, wantCode, body)
	}
	for _, secret := range []string{"zz-secret", "AccessDenied", "123456789012"} {
		if strings.Contains(body, secret) {
			t.Errorf("/readyz shows %q:\n%s", secret, body)
		}
	}
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz lacks %q:\n%s", want, body)
		}
	}
	logs := h.logs.String()
	for _, want := range []string{leakedRole, leakedKey} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
}
