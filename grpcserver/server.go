// Package grpcserver serves an [envelope.Envelope] to kube-apiserver on a
// unix socket: KMS v2 (and v1beta1), request limits, errors mapped to gRPC
// codes, a background [Prober] behind Status, health and metrics endpoints.
package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsv1 "k8s.io/kms/apis/v1beta1"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/envelope"
)

// Limits of the KMS v2 contract, enforced on the way in and out.
const (
	// SharesAnnotation carries the wrapped DEK (the envelope header).
	SharesAnnotation   = envelope.SharesAnnotation
	maxCiphertext      = 1024
	maxKeyID           = 1024
	maxAnnotationsSize = 32 * 1024
	statusVersion      = "v2"
	v1Version          = "v1beta1"
	// maxV1Cipher: kube-apiserver stores v1 ciphertext behind a uint16 length.
	maxV1Cipher = 1<<16 - 1
	// streamWorkers reuse goroutines whose stacks have grown; growing a
	// fresh one per request cost 7% of a warm Decrypt's CPU.
	streamWorkers = 32
)

// Envelope is what the services need of the envelope.
type Envelope interface {
	Encrypt(plaintext []byte) (envelope.Sealed, error)
	Decrypt(ctx context.Context, ciphertext, header []byte) ([]byte, error)
	// KeyID names the current DEK ("" before there is one).
	KeyID() string
}

// Services implements the KMS v2 and v1beta1 gRPC services.
type Services struct {
	env     Envelope
	health  func() Snapshot
	version string
	log     *slog.Logger
	keyIDs  keyIDs
}

// NewServices returns the services over env; health reports the prober's snapshot.
func NewServices(env Envelope, health func() Snapshot, version string, log *slog.Logger) *Services {
	return &Services{env: env, health: health, version: version, log: log}
}

// NewGRPCServer returns a gRPC server with both services, metrics (if m
// is not nil) and panic recovery.
func NewGRPCServer(s *Services, m *Metrics) *grpc.Server {
	srv := grpc.NewServer(grpc.UnaryInterceptor(unaryInterceptor(s.log, m)), grpc.MaxRecvMsgSize(4<<20), grpc.NumStreamWorkers(streamWorkers))
	kmsv2.RegisterKeyManagementServiceServer(srv, v2Service{Services: s})
	kmsv1.RegisterKeyManagementServiceServer(srv, v1Service{Services: s})
	return srv
}

// unaryInterceptor times requests into m around recoverInterceptor: one
// interceptor, as gRPC's chain of two costs every request a closure.
func unaryInterceptor(log *slog.Logger, m *Metrics) grpc.UnaryServerInterceptor {
	recovering := recoverInterceptor(log)
	if m == nil {
		return recovering
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := recovering(ctx, req, info, handler)
		m.observeRequest(info.FullMethod, err, start)
		return resp, err
	}
}

// recoverInterceptor turns a panic into codes.Internal, so one bad request
// cannot take down the plugin and the cluster's writes. The request is not
// logged: it may hold a DEK seed.
func recoverInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in gRPC handler; request failed", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}

func checkPlaintext(p []byte) error {
	if len(p) == 0 || len(p) > envelope.MaxPlaintextSize {
		return invalid("plaintext must be 1 to %d bytes, got %d", envelope.MaxPlaintextSize, len(p))
	}
	return nil
}

type v2Service struct {
	kmsv2.UnimplementedKeyManagementServiceServer
	*Services
}

// Status answers from the prober's snapshot: no remote call.
func (s v2Service) Status(context.Context, *kmsv2.StatusRequest) (*kmsv2.StatusResponse, error) {
	// Live, not from the probe: else Encrypt could answer with a key_id
	// Status never announced.
	snap := s.health()
	keyID := s.env.KeyID()
	if keyID == "" {
		keyID = snap.KeyID
	}
	return &kmsv2.StatusResponse{Version: statusVersion, Healthz: snap.Healthz, KeyId: keyID}, nil
}

func (s v2Service) Encrypt(ctx context.Context, req *kmsv2.EncryptRequest) (*kmsv2.EncryptResponse, error) {
	if err := checkPlaintext(req.GetPlaintext()); err != nil {
		return nil, err
	}
	sealed, err := s.env.Encrypt(req.GetPlaintext())
	if err != nil {
		return nil, s.fail(ctx, req.GetUid(), err)
	}
	if len(sealed.Ciphertext) > maxCiphertext || len(sealed.KeyID) > maxKeyID ||
		len(SharesAnnotation)+len(sealed.Header) > maxAnnotationsSize {
		return nil, status.Error(codes.Internal, "encrypt produced output over the KMS v2 limits")
	}
	s.log.Debug("encrypt", "uid", req.GetUid(), "key_id", sealed.KeyID)
	return &kmsv2.EncryptResponse{
		Ciphertext:  sealed.Ciphertext,
		KeyId:       sealed.KeyID,
		Annotations: map[string][]byte{SharesAnnotation: sealed.Header},
	}, nil
}

func (s v2Service) Decrypt(ctx context.Context, req *kmsv2.DecryptRequest) (*kmsv2.DecryptResponse, error) {
	ct := req.GetCiphertext()
	if len(ct) == 0 || len(ct) > maxCiphertext {
		return nil, invalid("ciphertext must be 1 to %d bytes, got %d", maxCiphertext, len(ct))
	}
	if len(req.GetKeyId()) > maxKeyID {
		return nil, invalid("key_id is %d bytes, over the limit of %d", len(req.GetKeyId()), maxKeyID)
	}
	size := 0
	for k, v := range req.GetAnnotations() {
		size += len(k) + len(v)
	}
	if size > maxAnnotationsSize {
		return nil, invalid("annotations are %d bytes, over the limit of %d", size, maxAnnotationsSize)
	}
	header, ok := req.GetAnnotations()[SharesAnnotation]
	if !ok {
		return nil, invalid("annotation %s is missing: this ciphertext was not made by Trousseau", SharesAnnotation)
	}
	if err := s.checkKeyID(ctx, req.GetUid(), req.GetKeyId(), header); err != nil {
		return nil, err
	}
	pt, err := s.env.Decrypt(ctx, ct, header)
	if err != nil {
		return nil, s.fail(ctx, req.GetUid(), err)
	}
	return &kmsv2.DecryptResponse{Plaintext: pt}, nil
}

// checkKeyID holds kube-apiserver to the contract that Decrypt gets the
// key_id Encrypt returned with these annotations: a mismatch (an altered
// or mixed-up object) is refused before any backend unwraps. This relies
// on [envelope.Header.KeyID] giving, for every header ever written, that
// key_id; it is remembered in [keyIDs].
func (s v2Service) checkKeyID(ctx context.Context, uid, keyID string, header []byte) error {
	if keyID == "" {
		return invalid("key_id is empty: Decrypt needs the key_id that Encrypt returned")
	}
	want, ok := s.keyIDs.get(header)
	if !ok {
		h, err := envelope.ParseHeader(header)
		if err != nil {
			return s.fail(ctx, uid, err)
		}
		want = h.KeyID()
		s.keyIDs.add(header, want)
	}
	if want != keyID {
		method, _ := grpc.Method(ctx)
		s.log.Warn("request failed: key_id does not match the wrapped DEK", "method", method, "uid", uid, "key_id", keyID, "header_key_id", want)
		return invalid("key_id does not match the wrapped DEK in the annotations")
	}
	return nil
}

type v1Service struct {
	kmsv1.UnimplementedKeyManagementServiceServer
	*Services
}

func checkV1Version(v string) error {
	if v != "" && v != v1Version {
		return invalid("unsupported KMS API version, want %q", v1Version)
	}
	return nil
}

func (s v1Service) Version(ctx context.Context, req *kmsv1.VersionRequest) (*kmsv1.VersionResponse, error) {
	if err := checkV1Version(req.GetVersion()); err != nil {
		return nil, err
	}
	return &kmsv1.VersionResponse{Version: v1Version, RuntimeName: "trousseau", RuntimeVersion: s.version}, nil
}

// Encrypt runs on every write under KMS v1, so it stays local.
func (s v1Service) Encrypt(ctx context.Context, req *kmsv1.EncryptRequest) (*kmsv1.EncryptResponse, error) {
	if err := checkV1Version(req.GetVersion()); err != nil {
		return nil, err
	}
	if err := checkPlaintext(req.GetPlain()); err != nil {
		return nil, err
	}
	sealed, err := s.env.Encrypt(req.GetPlain())
	if err != nil {
		return nil, s.fail(ctx, "", err)
	}
	blob := envelope.MarshalCombined(sealed.Header, sealed.Ciphertext)
	if len(blob) > maxV1Cipher {
		return nil, status.Error(codes.Internal, "encrypt produced output over the KMS v1 limit")
	}
	return &kmsv1.EncryptResponse{Cipher: blob}, nil
}

func (s v1Service) Decrypt(ctx context.Context, req *kmsv1.DecryptRequest) (*kmsv1.DecryptResponse, error) {
	if err := checkV1Version(req.GetVersion()); err != nil {
		return nil, err
	}
	if len(req.GetCipher()) > maxV1Cipher {
		return nil, invalid("cipher is %d bytes, over the limit of %d", len(req.GetCipher()), maxV1Cipher)
	}
	header, ct, err := envelope.ParseCombined(req.GetCipher())
	if err != nil {
		return nil, s.fail(ctx, "", err)
	}
	pt, err := s.env.Decrypt(ctx, ct, header)
	if err != nil {
		return nil, s.fail(ctx, "", err)
	}
	return &kmsv1.DecryptResponse{Plain: pt}, nil
}
