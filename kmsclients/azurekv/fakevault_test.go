package azurekv

import (
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys/fake"
)

// fakeVault is an in-memory Key Vault with real cryptography: RSA keys
// wrap with RSA-OAEP(-256), AES keys with AES key wrap (RFC 3394), and a
// ciphertext that does not decrypt is answered with 400, as Key Vault
// does. It is served to the SDK by its own fake transport (fakeServer)
// and over HTTP (fakeVaultHandler, in http_test.go).
type fakeVault struct {
	url string // https://host, as key IDs spell it

	mu   sync.Mutex
	keys map[string][]*fakeVersion // by lower-case name; last is latest

	down     atomic.Bool // answer 503
	throttle atomic.Bool // answer 429
	stall    atomic.Bool // never answer (the SDK fake only: see stallingTransport)
	requests atomic.Int64
}

type fakeVersion struct {
	kid     string
	rsa     *rsa.PrivateKey // or
	aes     []byte
	enabled bool
	expires *time.Time
}

// vaultError is an error answer of the fake vault.
type vaultError struct {
	status int
	code   string
	msg    string
}

func (e *vaultError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.msg) }

const testVaultURL = "https://trousseau-test.vault.azure.net"

func newFakeVault(url string) *fakeVault {
	return &fakeVault{url: url, keys: map[string][]*fakeVersion{}}
}

// rsaKeys hands out pre-generated RSA keys: generating one per version
// would make the suite slow under -race, and distinct keys per vault are
// not needed (key IDs already tell keys apart).
var rsaKeys = struct {
	sync.Mutex
	pool map[int][]*rsa.PrivateKey
	next map[int]int
}{pool: map[int][]*rsa.PrivateKey{}, next: map[int]int{}}

func testRSAKey(t testing.TB, bits int) *rsa.PrivateKey {
	rsaKeys.Lock()
	defer rsaKeys.Unlock()
	if len(rsaKeys.pool[bits]) < 3 {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		rsaKeys.pool[bits] = append(rsaKeys.pool[bits], k)
		return k
	}
	i := rsaKeys.next[bits] % len(rsaKeys.pool[bits])
	rsaKeys.next[bits]++
	return rsaKeys.pool[bits][i]
}

// addVersion adds a new latest version of key name (creating the key),
// of type "rsa2048", "rsa3072" or "aes256", and returns its ID.
func (v *fakeVault) addVersion(t testing.TB, name, kind string) string {
	ver := &fakeVersion{enabled: true}
	switch kind {
	case "rsa2048":
		ver.rsa = testRSAKey(t, 2048)
	case "rsa3072":
		ver.rsa = testRSAKey(t, 3072)
	case "aes256":
		ver.aes = make([]byte, 32)
		rand.Read(ver.aes)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	id := make([]byte, 16)
	rand.Read(id)
	ver.kid = fmt.Sprintf("%s/keys/%s/%s", v.url, name, hex.EncodeToString(id))
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys[strings.ToLower(name)] = append(v.keys[strings.ToLower(name)], ver)
	return ver.kid
}

// update changes the version with ID kid.
func (v *fakeVault) update(kid string, f func(*fakeVersion)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, versions := range v.keys {
		for _, ver := range versions {
			if ver.kid == kid {
				f(ver)
				return
			}
		}
	}
	panic("no key version " + kid)
}

// enter applies the switches every request goes through.
func (v *fakeVault) enter(ctx context.Context) error {
	v.requests.Add(1)
	switch {
	case v.down.Load():
		return &vaultError{http.StatusServiceUnavailable, "ServiceUnavailable", "The service is unavailable."}
	case v.throttle.Load():
		return &vaultError{http.StatusTooManyRequests, "Throttled", "Request was not processed because too many requests were received."}
	}
	return nil
}

func (v *fakeVault) find(name, version string) (fakeVersion, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	versions := v.keys[strings.ToLower(name)]
	for i := len(versions) - 1; i >= 0; i-- {
		if version == "" || strings.HasSuffix(versions[i].kid, "/"+version) {
			return *versions[i], nil
		}
	}
	return fakeVersion{}, &vaultError{http.StatusNotFound, "KeyNotFound", fmt.Sprintf("A key with (name/id) %s/%s was not found in this key vault.", name, version)}
}

// usable is Key Vault's refusal of a disabled or (for wrapping) expired key.
func (ver fakeVersion) usable(op string) error {
	if !ver.enabled {
		return &vaultError{http.StatusForbidden, "Forbidden", "Operation " + op + " is not allowed on a disabled key."}
	}
	if op == "wrapKey" && ver.expires != nil && !time.Now().Before(*ver.expires) {
		return &vaultError{http.StatusForbidden, "Forbidden", "Operation wrapKey is not allowed on an expired key."}
	}
	return nil
}

func (v *fakeVault) getKey(ctx context.Context, name, version string) (azkeys.KeyBundle, error) {
	if err := v.enter(ctx); err != nil {
		return azkeys.KeyBundle{}, err
	}
	ver, err := v.find(name, version)
	if err != nil {
		return azkeys.KeyBundle{}, err
	}
	jwk := &azkeys.JSONWebKey{
		KID:    to.Ptr(azkeys.ID(ver.kid)),
		KeyOps: to.SliceOfPtrs(azkeys.KeyOperationWrapKey, azkeys.KeyOperationUnwrapKey),
	}
	if ver.rsa != nil {
		jwk.Kty = to.Ptr(azkeys.KeyTypeRSA)
		jwk.N = ver.rsa.N.Bytes()
		jwk.E = big.NewInt(int64(ver.rsa.E)).Bytes()
	} else {
		jwk.Kty = to.Ptr(azkeys.KeyTypeOctHSM)
	}
	attrs := &azkeys.KeyAttributes{Enabled: to.Ptr(ver.enabled), Expires: ver.expires}
	return azkeys.KeyBundle{Key: jwk, Attributes: attrs}, nil
}

func (v *fakeVault) wrapKey(ctx context.Context, name, version string, p azkeys.KeyOperationParameters) (azkeys.KeyOperationResult, error) {
	return v.operate(ctx, "wrapKey", name, version, p)
}

func (v *fakeVault) unwrapKey(ctx context.Context, name, version string, p azkeys.KeyOperationParameters) (azkeys.KeyOperationResult, error) {
	if version == "" {
		return azkeys.KeyOperationResult{}, &vaultError{http.StatusBadRequest, "BadParameter", "unwrapKey needs a key version."}
	}
	return v.operate(ctx, "unwrapKey", name, version, p)
}

func (v *fakeVault) operate(ctx context.Context, op, name, version string, p azkeys.KeyOperationParameters) (azkeys.KeyOperationResult, error) {
	if err := v.enter(ctx); err != nil {
		return azkeys.KeyOperationResult{}, err
	}
	ver, err := v.find(name, version)
	if err != nil {
		return azkeys.KeyOperationResult{}, err
	}
	if err := ver.usable(op); err != nil {
		return azkeys.KeyOperationResult{}, err
	}
	if p.Algorithm == nil {
		return azkeys.KeyOperationResult{}, &vaultError{http.StatusBadRequest, "BadParameter", "alg is required."}
	}
	out, err := ver.crypt(op == "wrapKey", *p.Algorithm, p.Value)
	if err != nil {
		return azkeys.KeyOperationResult{}, &vaultError{http.StatusBadRequest, "BadParameter", err.Error()}
	}
	return azkeys.KeyOperationResult{KID: to.Ptr(azkeys.ID(ver.kid)), Result: out}, nil
}

func (ver fakeVersion) crypt(wrap bool, alg azkeys.EncryptionAlgorithm, in []byte) ([]byte, error) {
	var h hash.Hash
	switch {
	case alg == azkeys.EncryptionAlgorithmRSAOAEP256 && ver.rsa != nil:
		h = sha256.New()
	case alg == azkeys.EncryptionAlgorithmRSAOAEP && ver.rsa != nil:
		h = sha1.New()
	case alg == azkeys.EncryptionAlgorithmA256KW && ver.aes != nil:
		if wrap {
			return aesKeyWrap(ver.aes, in)
		}
		return aesKeyUnwrap(ver.aes, in)
	default:
		return nil, fmt.Errorf("Algorithm %s is not supported for this key.", alg)
	}
	if wrap {
		return rsa.EncryptOAEP(h, rand.Reader, &ver.rsa.PublicKey, in, nil)
	}
	out, err := rsa.DecryptOAEP(h, nil, ver.rsa, in, nil)
	if err != nil {
		return nil, errors.New("The parameter is incorrect.") // what Key Vault says
	}
	return out, nil
}

var kwIV = []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

// aesKeyWrap is RFC 3394 key wrap.
func aesKeyWrap(kek, plain []byte) ([]byte, error) {
	if len(plain) < 16 || len(plain)%8 != 0 {
		return nil, errors.New("key wrap input must be a multiple of 8 bytes, at least 16")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(plain) / 8
	out := append(append([]byte(nil), kwIV...), plain...)
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], out[:8])
			copy(b[8:], out[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(out[8*i:], b[8:])
		}
	}
	return out, nil
}

// aesKeyUnwrap is RFC 3394 key unwrap, with its integrity check.
func aesKeyUnwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 24 || len(wrapped)%8 != 0 {
		return nil, errors.New("The parameter is incorrect.")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(wrapped)/8 - 1
	out := append([]byte(nil), wrapped...)
	var b [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(out[:8])^t)
			copy(b[8:], out[8*i:8*i+8])
			block.Decrypt(b[:], b[:])
			copy(out[:8], b[:8])
			copy(out[8*i:], b[8:])
		}
	}
	if string(out[:8]) != string(kwIV) {
		return nil, errors.New("The parameter is incorrect.")
	}
	return out[8:], nil
}

// stallingTransport stands for a vault that does not answer. It is not
// done inside the fake.Server handlers because the SDK's fake transport
// panics (send on closed channel) when a request's context ends while a
// handler is still running; for the same reason it passes requests on
// with a context that is never cancelled.
type stallingTransport struct {
	v    *fakeVault
	next policy.Transporter
}

func (s stallingTransport) Do(req *http.Request) (*http.Response, error) {
	if s.v.stall.Load() {
		s.v.requests.Add(1)
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	// The fake answers at once; shield it from the caller's cancellation
	// (the envelope cancels the unwraps it no longer needs), which would
	// make it panic.
	return s.next.Do(req.WithContext(context.WithoutCancel(req.Context())))
}

// fakeServer serves v through the SDK's fake transport.
func (v *fakeVault) fakeServer() policy.Transporter {
	return stallingTransport{v, v.fakeTransport()}
}

func (v *fakeVault) fakeTransport() *fake.ServerTransport {
	return fake.NewServerTransport(&fake.Server{
		GetKey: func(ctx context.Context, name, version string, _ *azkeys.GetKeyOptions) (resp azfake.Responder[azkeys.GetKeyResponse], errResp azfake.ErrorResponder) {
			name, version = splitFakePath(name, version)
			k, err := v.getKey(ctx, name, version)
			respond(&resp, &errResp, azkeys.GetKeyResponse{KeyBundle: k}, err)
			return
		},
		WrapKey: func(ctx context.Context, name, version string, p azkeys.KeyOperationParameters, _ *azkeys.WrapKeyOptions) (resp azfake.Responder[azkeys.WrapKeyResponse], errResp azfake.ErrorResponder) {
			name, version = splitFakePath(name, version)
			r, err := v.wrapKey(ctx, name, version, p)
			respond(&resp, &errResp, azkeys.WrapKeyResponse{KeyOperationResult: r}, err)
			return
		},
		UnwrapKey: func(ctx context.Context, name, version string, p azkeys.KeyOperationParameters, _ *azkeys.UnwrapKeyOptions) (resp azfake.Responder[azkeys.UnwrapKeyResponse], errResp azfake.ErrorResponder) {
			name, version = splitFakePath(name, version)
			r, err := v.unwrapKey(ctx, name, version, p)
			respond(&resp, &errResp, azkeys.UnwrapKeyResponse{KeyOperationResult: r}, err)
			return
		},
	})
}

// splitFakePath repairs what the fake transport's path pattern makes of
// /keys/NAME/VERSION/...: its name pattern also matches "/", so the name
// can come with the version (and a slash) attached.
func splitFakePath(name, version string) (string, string) {
	if n, v, ok := strings.Cut(name, "/"); ok {
		if version == "" {
			version = strings.Trim(v, "/")
		}
		name = n
	}
	return name, version
}

func respond[T any](resp *azfake.Responder[T], errResp *azfake.ErrorResponder, body T, err error) {
	var ve *vaultError
	switch {
	case err == nil:
		resp.SetResponse(http.StatusOK, body, nil)
	case errors.As(err, &ve):
		errResp.SetResponseError(ve.status, ve.code)
	default:
		errResp.SetError(err)
	}
}
