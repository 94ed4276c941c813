package awskms

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// fakeKMS answers with whatever the test sets; unset calls fail the test.
type fakeKMS struct {
	t        *testing.T
	encrypt  func(context.Context, *kms.EncryptInput) (*kms.EncryptOutput, error)
	decrypt  func(context.Context, *kms.DecryptInput) (*kms.DecryptOutput, error)
	describe func(context.Context, *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error)
}

func (f *fakeKMS) Encrypt(ctx context.Context, in *kms.EncryptInput, _ ...func(*kms.Options)) (*kms.EncryptOutput, error) {
	if f.encrypt == nil {
		f.t.Fatal("unexpected Encrypt")
	}
	return f.encrypt(ctx, in)
}

func (f *fakeKMS) Decrypt(ctx context.Context, in *kms.DecryptInput, _ ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	if f.decrypt == nil {
		f.t.Fatal("unexpected Decrypt")
	}
	return f.decrypt(ctx, in)
}

func (f *fakeKMS) DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, _ ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	if f.describe == nil {
		f.t.Fatal("unexpected DescribeKey")
	}
	return f.describe(ctx, in)
}

func fakeBackend(t *testing.T, cfg Config, f *fakeKMS) *Backend {
	t.Helper()
	f.t = t
	b, err := withClient("fake", cfg, testRegion, f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// opError dresses err the way the SDK does.
func opError(op string, err error) error {
	return &smithy.OperationError{ServiceID: "KMS", OperationName: op, Err: err}
}

func apiError(code string) error {
	return opError("Decrypt", &smithy.GenericAPIError{Code: code, Message: "refused"})
}

func httpError(status int) error {
	return opError("Decrypt", &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
		Err:      errors.New("unmodeled"),
	})
}

var secretShare = []byte("SECRET-SHARE-must-not-leak-0123456789")

func TestErrorKinds(t *testing.T) {
	refused := opError("Decrypt", &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{}},
		Err:      &smithyhttp.RequestSendError{Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}},
	})
	for _, tc := range []struct {
		name string
		err  error
		want string // kmsclients.Kind
	}{
		{"InvalidCiphertext", apiError("InvalidCiphertextException"), "invalid"},
		{"IncorrectKey", apiError("IncorrectKeyException"), "invalid"},
		{"AccessDenied", apiError("AccessDeniedException"), "permission"},
		{"Disabled", apiError("DisabledException"), "permission"},
		{"InvalidState", apiError("KMSInvalidStateException"), "permission"},
		{"NotFound", apiError("NotFoundException"), "permission"},
		{"STS AccessDenied", apiError("AccessDenied"), "permission"},
		{"expired token", apiError("ExpiredTokenException"), "permission"},
		{"Throttling", apiError("ThrottlingException"), "unavailable"},
		{"LimitExceeded", apiError("LimitExceededException"), "unavailable"},
		{"KMSInternal", apiError("KMSInternalException"), "unavailable"},
		{"KeyUnavailable", apiError("KeyUnavailableException"), "unavailable"},
		{"DependencyTimeout", apiError("DependencyTimeoutException"), "unavailable"},
		{"HTTP 500", httpError(500), "unavailable"},
		{"HTTP 503", httpError(503), "unavailable"},
		{"HTTP 429", httpError(429), "unavailable"},
		{"HTTP 403", httpError(403), "permission"},
		{"connection refused", refused, "unavailable"},
		{"bare net error", &net.DNSError{Err: "no such host", Name: "kms", IsTimeout: true}, "unavailable"},
		{"unknown code", apiError("ValidationException"), "other"},
		{"HTTP 400 unmodeled", httpError(400), "other"},
		{"plain error", errors.New("something"), "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fakeBackend(t, Config{KeyID: key1ARN}, &fakeKMS{
				encrypt: func(context.Context, *kms.EncryptInput) (*kms.EncryptOutput, error) { return nil, tc.err },
				decrypt: func(context.Context, *kms.DecryptInput) (*kms.DecryptOutput, error) { return nil, tc.err },
				describe: func(context.Context, *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
					return nil, tc.err
				},
			})
			ctx := context.Background()
			_, errWrap := b.Wrap(ctx, secretShare, []byte("aad"))
			_, errUnwrap := b.Unwrap(ctx, kmsclients.Wrapped{Ciphertext: framing.Frame([]byte("blob")), KeyIdentity: key1ARN}, []byte("aad"))
			_, errProbe := b.Probe(ctx)
			for op, err := range map[string]error{"wrap": errWrap, "unwrap": errUnwrap, "probe": errProbe} {
				if got := kmsclients.Kind(err); got != tc.want {
					t.Errorf("%s: kind %s, want %s (%v)", op, got, tc.want, err)
				}
				if prefix := "awskms fake: " + op + ": "; !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("%s: %q does not start with %q", op, err, prefix)
				}
				if !errors.Is(err, tc.err) {
					t.Errorf("%s: the SDK error is not wrapped: %v", op, err)
				}
				if strings.Contains(err.Error(), string(secretShare)) {
					t.Errorf("%s: error message holds the share", op)
				}
			}
		})
	}
}

// TestContextWins: whatever the SDK returns once the caller's context is
// done, the caller sees its cancellation or deadline.
func TestContextWins(t *testing.T) {
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		b := fakeBackend(t, Config{KeyID: key1ARN}, &fakeKMS{
			decrypt: func(context.Context, *kms.DecryptInput) (*kms.DecryptOutput, error) {
				cancel()
				return nil, httpError(503)
			},
		})
		_, err := b.Unwrap(ctx, kmsclients.Wrapped{Ciphertext: framing.Frame([]byte("blob")), KeyIdentity: key1ARN}, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		b := fakeBackend(t, Config{KeyID: key1ARN}, &fakeKMS{
			describe: func(ctx context.Context, _ *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
				<-ctx.Done()
				return nil, errors.New("request failed")
			},
		})
		_, err := b.Probe(ctx)
		if kmsclients.Kind(err) != "deadline" {
			t.Fatalf("got %v (kind %s), want deadline", err, kmsclients.Kind(err))
		}
	})
}

func TestWrapRequest(t *testing.T) {
	var got *kms.EncryptInput
	b := fakeBackend(t, Config{KeyID: aliasName, EncryptionContext: map[string]string{"cluster": "prod"}}, &fakeKMS{
		encrypt: func(_ context.Context, in *kms.EncryptInput) (*kms.EncryptOutput, error) {
			got = in
			return &kms.EncryptOutput{KeyId: aws.String(key2ARN), CiphertextBlob: []byte("blob")}, nil
		},
	})
	aad := []byte("dek=9;share=3")
	w, err := b.Wrap(context.Background(), secretShare, aad)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cluster": "prod", "trousseau": "share", "trousseau-aad": base64.StdEncoding.EncodeToString(aad)}
	if aws.ToString(got.KeyId) != aliasName || !maps.Equal(got.EncryptionContext, want) || !bytes.Equal(got.Plaintext, secretShare) {
		t.Fatalf("Encrypt got key %q, context %v", aws.ToString(got.KeyId), got.EncryptionContext)
	}
	if w.KeyIdentity != key2ARN {
		t.Fatalf("KeyIdentity %q, want the key Encrypt reports, %q", w.KeyIdentity, key2ARN)
	}
	if blob, err := framing.Unframe(w.Ciphertext); err != nil || string(blob) != "blob" {
		t.Fatalf("wrapped share does not hold the KMS blob: %q", w.Ciphertext)
	}
}

func TestWrapRefusesForeignKey(t *testing.T) {
	b := fakeBackend(t, Config{KeyID: key1ARN}, &fakeKMS{
		encrypt: func(context.Context, *kms.EncryptInput) (*kms.EncryptOutput, error) {
			return &kms.EncryptOutput{KeyId: aws.String(key2ARN), CiphertextBlob: []byte("blob")}, nil
		},
	})
	if _, err := b.Wrap(context.Background(), secretShare, nil); err == nil {
		t.Fatal("Wrap accepted a ciphertext made under another key")
	}
}

func TestUnwrapRequest(t *testing.T) {
	var got *kms.DecryptInput
	b := fakeBackend(t, Config{KeyID: aliasARN}, &fakeKMS{
		decrypt: func(_ context.Context, in *kms.DecryptInput) (*kms.DecryptOutput, error) {
			got = in
			return &kms.DecryptOutput{KeyId: in.KeyId, Plaintext: bytes.Clone(secretShare)}, nil
		},
	})
	aad := []byte("dek=9;share=3")
	share, err := b.Unwrap(context.Background(), kmsclients.Wrapped{Ciphertext: framing.Frame([]byte("blob")), KeyIdentity: key2ARN}, aad)
	if err != nil || !bytes.Equal(share, secretShare) {
		t.Fatalf("Unwrap = %q, %v", share, err)
	}
	if aws.ToString(got.KeyId) != key2ARN || string(got.CiphertextBlob) != "blob" || got.EncryptionContext["trousseau-aad"] != base64.StdEncoding.EncodeToString(aad) {
		t.Fatalf("Decrypt got key %q, blob %q, context %v", aws.ToString(got.KeyId), got.CiphertextBlob, got.EncryptionContext)
	}
}

// TestUnwrapRefusesLocally: a share this backend cannot own, or a corrupt
// one, is refused without a KMS call (the fake fails on any call).
func TestUnwrapRefusesLocally(t *testing.T) {
	b := fakeBackend(t, Config{KeyID: key1ARN}, &fakeKMS{})
	good := framing.Frame([]byte("blob"))
	for name, w := range map[string]kmsclients.Wrapped{
		"other key":      {Ciphertext: good, KeyIdentity: key2ARN},
		"alias identity": {Ciphertext: good, KeyIdentity: aliasARN},
		"bad version":    {Ciphertext: append([]byte{2}, good[1:]...), KeyIdentity: key1ARN},
		"bad checksum":   {Ciphertext: append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1), KeyIdentity: key1ARN},
		"too short":      {Ciphertext: good[:4], KeyIdentity: key1ARN},
		"empty":          {KeyIdentity: key1ARN},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := b.Unwrap(context.Background(), w, nil)
			if !errors.Is(err, kmsclients.ErrInvalidCiphertext) {
				t.Fatalf("got %v, want invalid ciphertext", err)
			}
		})
	}
}

// foreignKeyARN is key 1's ID in another account: what someone who can
// write etcd would name to have a share opened by a key of their own.
const foreignKeyARN = "arn:aws:kms:" + testRegion + ":999999999999:key/" + key1ID

// pinningFake is a KMS whose keyID resolves to key 1, counting Decrypts.
func pinningFake(decrypts *atomic.Int32) *fakeKMS {
	return &fakeKMS{
		describe: func(context.Context, *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
			return &kms.DescribeKeyOutput{KeyMetadata: &types.KeyMetadata{
				Arn: aws.String(key1ARN), KeyState: types.KeyStateEnabled, KeyUsage: types.KeyUsageTypeEncryptDecrypt,
			}}, nil
		},
		encrypt: func(context.Context, *kms.EncryptInput) (*kms.EncryptOutput, error) {
			return &kms.EncryptOutput{KeyId: aws.String(key1ARN), CiphertextBlob: []byte("blob")}, nil
		},
		decrypt: func(_ context.Context, in *kms.DecryptInput) (*kms.DecryptOutput, error) {
			decrypts.Add(1)
			return &kms.DecryptOutput{KeyId: in.KeyId, Plaintext: bytes.Clone(secretShare)}, nil
		},
	}
}

// TestAccountPinned: an alias name or bare key ID is pinned to the account
// of the key KMS resolves it to, however that is first learned, and a
// share naming a key of another account is refused without a Decrypt.
func TestAccountPinned(t *testing.T) {
	learn := map[string]func(*Backend) error{
		"by Probe":  func(b *Backend) error { _, err := b.Probe(context.Background()); return err },
		"by Wrap":   func(b *Backend) error { _, err := b.Wrap(context.Background(), secretShare, nil); return err },
		"by Unwrap": func(*Backend) error { return nil },
	}
	for _, keyID := range []string{aliasName, key1ID} {
		for how, first := range learn {
			t.Run(keyID+"/"+how, func(t *testing.T) {
				var decrypts atomic.Int32
				b := fakeBackend(t, Config{KeyID: keyID, Region: testRegion}, pinningFake(&decrypts))
				if err := first(b); err != nil {
					t.Fatal(err)
				}
				foreign := kmsclients.Wrapped{Ciphertext: framing.Frame([]byte("blob")), KeyIdentity: foreignKeyARN}
				_, err := b.Unwrap(context.Background(), foreign, nil)
				kmstest.WantKind(t, "Unwrap of a share naming another account's key", err, kmsclients.ErrInvalidCiphertext)
				if n := decrypts.Load(); n != 0 {
					t.Fatalf("%d Decrypts sent for another account's key", n)
				}
				own := kmsclients.Wrapped{Ciphertext: framing.Frame([]byte("blob")), KeyIdentity: key1ARN}
				if _, err := b.Unwrap(context.Background(), own, nil); err != nil {
					t.Fatalf("Unwrap under the resolved key: %v", err)
				}
			})
		}
	}
}

// TestAliasPinnedKeepsRotation: an alias name still owns the other keys
// of its account, and refuses a later answer of KMS in another account.
func TestAliasPinnedKeepsRotation(t *testing.T) {
	var decrypts atomic.Int32
	f := pinningFake(&decrypts)
	b := fakeBackend(t, Config{KeyID: aliasName, Region: testRegion}, f)
	if _, err := b.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	repointed := kmsclients.Wrapped{Ciphertext: framing.Frame([]byte("blob")), KeyIdentity: key2ARN}
	if _, err := b.Unwrap(context.Background(), repointed, nil); err != nil {
		t.Fatalf("Unwrap under another key of the alias's account: %v", err)
	}
	f.describe = func(context.Context, *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
		return &kms.DescribeKeyOutput{KeyMetadata: &types.KeyMetadata{
			Arn: aws.String(foreignKeyARN), KeyState: types.KeyStateEnabled, KeyUsage: types.KeyUsageTypeEncryptDecrypt,
		}}, nil
	}
	if id, err := b.Probe(context.Background()); err == nil {
		t.Fatalf("Probe accepted %q, a key of another account than the one pinned", id)
	}
}

// TestUnwrapResolveFails: with no home known and KMS down, Unwrap reports
// KMS's failure and sends no Decrypt.
func TestUnwrapResolveFails(t *testing.T) {
	b := fakeBackend(t, Config{KeyID: aliasName, Region: testRegion}, &fakeKMS{
		describe: func(context.Context, *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
			return nil, httpError(503)
		},
	})
	_, err := b.Unwrap(context.Background(), kmsclients.Wrapped{Ciphertext: framing.Frame([]byte("blob")), KeyIdentity: key1ARN}, nil)
	kmstest.WantKind(t, "Unwrap with KMS down", err, kmsclients.ErrUnavailable)
	if !strings.HasPrefix(err.Error(), "awskms fake: unwrap: ") {
		t.Fatalf("error %q lacks the prefix", err)
	}
}

func TestProbeKeyStates(t *testing.T) {
	for _, tc := range []struct {
		state types.KeyState
		usage types.KeyUsageType
		spec  types.KeySpec
		want  string
	}{
		{types.KeyStateEnabled, types.KeyUsageTypeEncryptDecrypt, types.KeySpecSymmetricDefault, "ok"},
		{types.KeyStateEnabled, types.KeyUsageTypeEncryptDecrypt, "", "ok"},
		{types.KeyStateDisabled, types.KeyUsageTypeEncryptDecrypt, types.KeySpecSymmetricDefault, "permission"},
		{types.KeyStatePendingDeletion, types.KeyUsageTypeEncryptDecrypt, types.KeySpecSymmetricDefault, "permission"},
		{types.KeyStatePendingImport, types.KeyUsageTypeEncryptDecrypt, types.KeySpecSymmetricDefault, "permission"},
		{types.KeyStatePendingReplicaDeletion, types.KeyUsageTypeEncryptDecrypt, types.KeySpecSymmetricDefault, "permission"},
		{types.KeyStateUnavailable, types.KeyUsageTypeEncryptDecrypt, types.KeySpecSymmetricDefault, "unavailable"},
		{types.KeyStateUpdating, types.KeyUsageTypeEncryptDecrypt, types.KeySpecSymmetricDefault, "unavailable"},
		{types.KeyStateEnabled, types.KeyUsageTypeSignVerify, types.KeySpecEccNistP256, "permission"},
		{types.KeyStateEnabled, types.KeyUsageTypeEncryptDecrypt, types.KeySpecRsa2048, "permission"},
	} {
		t.Run(fmt.Sprintf("%s/%s/%s", tc.state, tc.usage, tc.spec), func(t *testing.T) {
			b := fakeBackend(t, Config{KeyID: aliasARN}, &fakeKMS{
				describe: func(_ context.Context, in *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
					if aws.ToString(in.KeyId) != aliasARN {
						t.Errorf("DescribeKey of %q, want the configured %q", aws.ToString(in.KeyId), aliasARN)
					}
					return &kms.DescribeKeyOutput{KeyMetadata: &types.KeyMetadata{
						Arn: aws.String(key1ARN), KeyId: aws.String(key1ID), KeyState: tc.state, KeyUsage: tc.usage, KeySpec: tc.spec,
					}}, nil
				},
			})
			id, err := b.Probe(context.Background())
			if got := kmsclients.Kind(err); got != tc.want {
				t.Fatalf("Probe: %v (kind %s), want %s", err, got, tc.want)
			}
			if err == nil && id != key1ARN {
				t.Fatalf("Probe = %q, want the key ARN %q", id, key1ARN)
			}
		})
	}
}

// TestRetriesBounded runs the real SDK client against a server that
// always fails, counting attempts.
func TestRetriesBounded(t *testing.T) {
	for name, tc := range map[string]struct {
		status int
		code   string
	}{
		"internal error": {500, "KMSInternalException"},
		"throttled":      {400, "ThrottlingException"},
	} {
		t.Run(name, func(t *testing.T) {
			var attempts atomic.Int32
			endpoint := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				attempts.Add(1)
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.WriteHeader(tc.status)
				fmt.Fprintf(w, `{"__type":%q,"message":"no"}`, tc.code)
			}))
			b := newTestBackend(t, "aws-flaky", endpoint, Config{KeyID: key1ARN})
			_, err := b.Probe(ctxFor(t, 10*time.Second))
			if !errors.Is(err, kmsclients.ErrUnavailable) {
				t.Fatalf("Probe: %v (kind %s), want unavailable", err, kmsclients.Kind(err))
			}
			if n := attempts.Load(); n != maxAttempts {
				t.Fatalf("%d attempts, want %d", n, maxAttempts)
			}
		})
	}
}

// TestCallerDeadlineRules: a server that never answers holds a call only
// as long as the caller's deadline.
func TestCallerDeadlineRules(t *testing.T) {
	release := make(chan struct{})
	endpoint := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	// Cleanups run last-in first-out: this frees the handler before the
	// server's Close waits for it.
	t.Cleanup(func() { close(release) })
	b := newTestBackend(t, "aws-hung", endpoint, Config{KeyID: key1ARN})
	start := time.Now()
	_, err := b.Wrap(ctxFor(t, 300*time.Millisecond), secretShare, nil)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("Wrap returned after %v, the deadline was 300ms", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wrap: %v (kind %s), want deadline", err, kmsclients.Kind(err))
	}
}

// serve runs handler on a loopback port and returns its URL.
func serve(t *testing.T, handler http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestStoredFormatUnchanged: a share stored by an earlier release (this
// frame was made by the backend's own code before kmsclients.Framing)
// still decodes, and Wrap still stores the same bytes.
func TestStoredFormatUnchanged(t *testing.T) {
	stored, _ := hex.DecodeString("016b6d732d636970686572746578742d626c6f629153928d")
	blob, err := framing.Unframe(stored)
	if err != nil || string(blob) != "kms-ciphertext-blob" {
		t.Fatalf("Unframe = %q, %v", blob, err)
	}
	if got := framing.Frame(blob); !bytes.Equal(got, stored) {
		t.Fatalf("Frame = %x, want %x", got, stored)
	}
}
