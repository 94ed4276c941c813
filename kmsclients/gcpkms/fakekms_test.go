package gcpkms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// fakeKMS is a Cloud KMS gRPC server with real cryptography behind it:
// AES-256-GCM per key version, the request's additional authenticated
// data bound into each ciphertext, CRC32C integrity fields checked and
// set as Cloud KMS documents them, key versions with a primary, enable /
// disable / destroy, IAM-style denial per key, and injectable faults.
type fakeKMS struct {
	kmspb.UnimplementedKeyManagementServiceServer

	mu   sync.Mutex
	keys map[string]*fakeKey // by key name, with the project ID
	// projectNumbers maps a project ID to a number: answers then name
	// that project's keys with the number, as AIP-2510 asks of services.
	projectNumbers map[string]string
	denied         map[string]bool // key names the caller may not use
	mangle         func(proto.Message)

	latency   atomic.Int64 // time.Duration before each answer
	failCode  atomic.Uint32
	failCount atomic.Int32 // the next failCount calls answer failCode
	calls     sync.Map     // method name -> *atomic.Int32

	// token, when set, is the bearer token every call must carry (a
	// server on TLS); without it, a call that carries one is refused: a
	// token must never cross plaintext.
	token   string
	srvOpts []grpc.ServerOption
	lastEnc atomic.Pointer[kmspb.EncryptRequest]
	lastDec atomic.Pointer[kmspb.DecryptRequest]

	addr string
	srv  *grpc.Server
}

type fakeKey struct {
	versions []*fakeVersion // versions[i] has ID i+1
	primary  int            // ID of the primary version
}

type fakeVersion struct {
	state kmspb.CryptoKeyVersion_CryptoKeyVersionState
	aead  cipher.AEAD // nil once destroyed
}

// Key names of the tests.
const (
	testKey  = "projects/trousseau-test/locations/europe-west1/keyRings/ring/cryptoKeys/share"
	otherKey = "projects/trousseau-test/locations/europe-west1/keyRings/ring/cryptoKeys/other"
)

// startFake serves a fake Cloud KMS on 127.0.0.1 until the test ends,
// with the given keys (one enabled version each).
func startFake(t testing.TB, keys ...string) *fakeKMS {
	t.Helper()
	return newFake(t, keys...).start(t)
}

func newFake(t testing.TB, keys ...string) *fakeKMS {
	t.Helper()
	f := &fakeKMS{keys: map[string]*fakeKey{}, projectNumbers: map[string]string{}, denied: map[string]bool{}}
	for _, k := range keys {
		f.addVersion(t, k)
	}
	return f
}

// startTLS serves f on 127.0.0.1 with a certificate of pki for localhost,
// and wants token on every call.
func (f *fakeKMS) startTLS(t testing.TB, pki *testutil.PKI, token string) *fakeKMS {
	t.Helper()
	certFile, keyFile := pki.Server(t, "fake-kms")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	f.token = token
	f.srvOpts = []grpc.ServerOption{grpc.Creds(credentials.NewServerTLSFromCert(&cert))}
	return f.start(t)
}

func (f *fakeKMS) start(t testing.TB) *fakeKMS {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	f.serve(lis)
	t.Cleanup(f.stop)
	return f
}

func (f *fakeKMS) serve(lis net.Listener) {
	srv := grpc.NewServer(f.srvOpts...)
	kmspb.RegisterKeyManagementServiceServer(srv, f)
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go srv.Serve(lis)
}

// stop stops the server: calls find nothing listening.
func (f *fakeKMS) stop() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// restart serves again on the same address.
func (f *fakeKMS) restart(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	f.serve(lis)
}

// addVersion adds an enabled version to key (creating it), makes it
// primary, and returns its name.
func (f *fakeKMS) addVersion(t testing.TB, key string) string {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.keys[key]
	if k == nil {
		k = &fakeKey{}
		f.keys[key] = k
	}
	k.versions = append(k.versions, &fakeVersion{state: kmspb.CryptoKeyVersion_ENABLED, aead: aead})
	k.primary = len(k.versions)
	return fmt.Sprintf("%s/cryptoKeyVersions/%d", key, k.primary)
}

// setState sets the state of a key version, by its name; destroying it
// drops its key material.
func (f *fakeKMS) setState(t testing.TB, version string, state kmspb.CryptoKeyVersion_CryptoKeyVersionState) {
	t.Helper()
	key, id, ok := strings.Cut(version, "/cryptoKeyVersions/")
	n, err := strconv.Atoi(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.keys[key]
	if !ok || err != nil || k == nil || n < 1 || n > len(k.versions) {
		t.Fatalf("no key version %s", version)
	}
	v := k.versions[n-1]
	v.state = state
	if state == kmspb.CryptoKeyVersion_DESTROYED {
		v.aead = nil
	}
}

func (f *fakeKMS) deny(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.denied[key] = true
}

// useProjectNumber makes answers name the project's keys with number.
func (f *fakeKMS) useProjectNumber(project, number string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.projectNumbers[project] = number
}

// setMangle makes every answer pass through m (nil: none) before it is
// sent: corruption on the way back.
func (f *fakeKMS) setMangle(m func(proto.Message)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mangle = m
}

// failNext makes the next n calls fail with code.
func (f *fakeKMS) failNext(code codes.Code, n int) {
	f.failCode.Store(uint32(code))
	f.failCount.Store(int32(n))
}

func (f *fakeKMS) setLatency(d time.Duration) { f.latency.Store(int64(d)) }

// callCount is how many calls of method (Encrypt, Decrypt, GetCryptoKey)
// reached the server, faults included.
func (f *fakeKMS) callCount(method string) int {
	c, _ := f.calls.LoadOrStore(method, new(atomic.Int32))
	return int(c.(*atomic.Int32).Load())
}

// begin runs what every call goes through: counting, latency, faults.
func (f *fakeKMS) begin(ctx context.Context, method string) error {
	c, _ := f.calls.LoadOrStore(method, new(atomic.Int32))
	c.(*atomic.Int32).Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	switch auth := md.Get("authorization"); {
	case f.token == "" && len(auth) > 0:
		return status.Error(codes.Internal, "fake: a token was sent in plaintext")
	case f.token != "" && (len(auth) != 1 || auth[0] != "Bearer "+f.token):
		return status.Error(codes.Unauthenticated, "Request had invalid authentication credentials.")
	}
	if d := time.Duration(f.latency.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if f.failCount.Add(-1) >= 0 {
		return status.Errorf(codes.Code(f.failCode.Load()), "fake: injected %s", codes.Code(f.failCode.Load()))
	}
	return nil
}

// finish applies the mangler to an answer.
func (f *fakeKMS) finish(m proto.Message) {
	f.mu.Lock()
	mangle := f.mangle
	f.mu.Unlock()
	if mangle != nil {
		mangle(m)
	}
}

// canonical maps a key name spelled with a project number to the one
// with the project ID, under which the key is kept.
func (f *fakeKMS) canonical(name string) string {
	for id, number := range f.projectNumbers {
		if rest, ok := strings.CutPrefix(name, "projects/"+number+"/"); ok {
			return "projects/" + id + "/" + rest
		}
	}
	return name
}

// reported is how answers spell a key name.
func (f *fakeKMS) reported(name string) string {
	for id, number := range f.projectNumbers {
		if rest, ok := strings.CutPrefix(name, "projects/"+id+"/"); ok {
			return "projects/" + number + "/" + rest
		}
	}
	return name
}

// key finds a key the caller may use, under f.mu.
func (f *fakeKMS) key(name, permission string) (string, *fakeKey, error) {
	name = f.canonical(name)
	if f.denied[name] || f.keys[name] == nil {
		// Cloud KMS says the same for a key that does not exist.
		return "", nil, status.Errorf(codes.PermissionDenied, "Permission '%s' denied on resource '%s' (or it may not exist).", permission, name)
	}
	return name, f.keys[name], nil
}

func crc(b []byte) int64 { return int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))) }

// checkCRC verifies an optional request checksum, as Cloud KMS does.
func checkCRC(field string, sum *wrapperspb.Int64Value, b []byte) (bool, error) {
	if sum == nil {
		return false, nil
	}
	if sum.GetValue() != crc(b) {
		return false, status.Errorf(codes.InvalidArgument, "The checksum in field %s did not match the data in field %s.", field+"_crc32c", field)
	}
	return true, nil
}

// Ciphertext of the fake: the version ID, a nonce, and AES-256-GCM over
// the plaintext with the key's name, the version and the request's
// additional authenticated data as GCM's associated data.
const fakeHeader = 4 + 12

func gcmAAD(key string, id int, aad []byte) []byte {
	return append(fmt.Appendf(nil, "%s\x00%d\x00", key, id), aad...)
}

func (f *fakeKMS) Encrypt(ctx context.Context, req *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	f.lastEnc.Store(proto.Clone(req).(*kmspb.EncryptRequest))
	if err := f.begin(ctx, "Encrypt"); err != nil {
		return nil, err
	}
	verifiedPlain, err := checkCRC("plaintext", req.GetPlaintextCrc32C(), req.GetPlaintext())
	if err != nil {
		return nil, err
	}
	verifiedAAD, err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedDataCrc32C(), req.GetAdditionalAuthenticatedData())
	if err != nil {
		return nil, err
	}
	if len(req.GetPlaintext()) == 0 || len(req.GetPlaintext()) > 64<<10 {
		return nil, status.Error(codes.InvalidArgument, "plaintext must be 1 to 65536 bytes")
	}
	f.mu.Lock()
	name, k, err := f.key(req.GetName(), "cloudkms.cryptoKeyVersions.useToEncrypt")
	if err != nil {
		f.mu.Unlock()
		return nil, err
	}
	id := k.primary
	v := k.versions[id-1]
	if v.state != kmspb.CryptoKeyVersion_ENABLED {
		f.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "The request cannot be fulfilled. Resource %s/cryptoKeyVersions/%d has value %s in field crypto_key_version.state.", f.reported(name), id, v.state)
	}
	aead := v.aead
	reported := f.reported(name)
	f.mu.Unlock()

	out := make([]byte, fakeHeader, fakeHeader+len(req.GetPlaintext())+aead.Overhead())
	binary.BigEndian.PutUint32(out, uint32(id))
	if _, err := rand.Read(out[4:fakeHeader]); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	out = aead.Seal(out, out[4:fakeHeader], req.GetPlaintext(), gcmAAD(name, id, req.GetAdditionalAuthenticatedData()))
	resp := &kmspb.EncryptResponse{
		Name:                    fmt.Sprintf("%s/cryptoKeyVersions/%d", reported, id),
		Ciphertext:              out,
		CiphertextCrc32C:        wrapperspb.Int64(crc(out)),
		VerifiedPlaintextCrc32C: verifiedPlain,
		VerifiedAdditionalAuthenticatedDataCrc32C: verifiedAAD,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}
	f.finish(resp)
	return resp, nil
}

func (f *fakeKMS) Decrypt(ctx context.Context, req *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	f.lastDec.Store(proto.Clone(req).(*kmspb.DecryptRequest))
	if err := f.begin(ctx, "Decrypt"); err != nil {
		return nil, err
	}
	if _, err := checkCRC("ciphertext", req.GetCiphertextCrc32C(), req.GetCiphertext()); err != nil {
		return nil, err
	}
	if _, err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedDataCrc32C(), req.GetAdditionalAuthenticatedData()); err != nil {
		return nil, err
	}
	if strings.Contains(req.GetName(), "/cryptoKeyVersions/") {
		return nil, status.Error(codes.InvalidArgument, "Decrypt takes a CryptoKey name, not a version's")
	}
	invalid := status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid.")
	ct := req.GetCiphertext()
	if len(ct) < fakeHeader {
		return nil, invalid
	}
	id := int(binary.BigEndian.Uint32(ct))
	f.mu.Lock()
	name, k, err := f.key(req.GetName(), "cloudkms.cryptoKeyVersions.useToDecrypt")
	if err != nil {
		f.mu.Unlock()
		return nil, err
	}
	if id < 1 || id > len(k.versions) {
		f.mu.Unlock()
		return nil, invalid
	}
	v := k.versions[id-1]
	state, aead, primary := v.state, v.aead, id == k.primary
	reported := f.reported(name)
	f.mu.Unlock()
	if state != kmspb.CryptoKeyVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "The request cannot be fulfilled. Resource %s/cryptoKeyVersions/%d has value %s in field crypto_key_version.state.", reported, id, state)
	}
	plain, err := aead.Open(nil, ct[4:fakeHeader], ct[fakeHeader:], gcmAAD(name, id, req.GetAdditionalAuthenticatedData()))
	if err != nil {
		return nil, invalid
	}
	resp := &kmspb.DecryptResponse{
		Plaintext:       plain,
		PlaintextCrc32C: wrapperspb.Int64(crc(plain)),
		UsedPrimary:     primary,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}
	f.finish(resp)
	return resp, nil
}

func (f *fakeKMS) GetCryptoKey(ctx context.Context, req *kmspb.GetCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	if err := f.begin(ctx, "GetCryptoKey"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	name, k, err := f.key(req.GetName(), "cloudkms.cryptoKeys.get")
	if err != nil {
		f.mu.Unlock()
		return nil, err
	}
	reported := f.reported(name)
	resp := &kmspb.CryptoKey{
		Name:    reported,
		Purpose: kmspb.CryptoKey_ENCRYPT_DECRYPT,
		Primary: &kmspb.CryptoKeyVersion{
			Name:            fmt.Sprintf("%s/cryptoKeyVersions/%d", reported, k.primary),
			State:           k.versions[k.primary-1].state,
			Algorithm:       kmspb.CryptoKeyVersion_GOOGLE_SYMMETRIC_ENCRYPTION,
			ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
		},
	}
	f.mu.Unlock()
	f.finish(resp)
	return resp, nil
}
