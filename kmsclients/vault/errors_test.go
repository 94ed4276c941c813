package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/trousseau-io/trousseau/kmsclients"
)

func TestClassifyStatus(t *testing.T) {
	for name, tc := range map[string]struct {
		op     string
		status int
		msg    string
		want   error
	}{
		"sealed":                 {opWrap, 503, "Vault is sealed", kmsclients.ErrUnavailable},
		"internal error":         {opProbe, 500, "internal error", kmsclients.ErrUnavailable},
		"rate limited":           {opUnwrap, 429, "request path \"transit/decrypt/k\": rate limit quota exceeded", kmsclients.ErrUnavailable},
		"standby behind":         {opUnwrap, 412, "", kmsclients.ErrUnavailable},
		"forbidden":              {opWrap, 403, "permission denied", kmsclients.ErrPermission},
		"no such mount":          {opProbe, 404, "no handler for route", kmsclients.ErrPermission},
		"bad login":              {opLogin, 400, "invalid role or secret ID", kmsclients.ErrPermission},
		"encrypt refused":        {opWrap, 400, "encryption key not found", kmsclients.ErrPermission},
		"tampered":               {opUnwrap, 400, "cipher: message authentication failed", kmsclients.ErrInvalidCiphertext},
		"no prefix":              {opUnwrap, 400, "invalid ciphertext: no prefix", kmsclients.ErrInvalidCiphertext},
		"version too new":        {opUnwrap, 400, "invalid ciphertext: version is too new", kmsclients.ErrInvalidCiphertext},
		"version too old":        {opUnwrap, 400, "ciphertext or signature version is disallowed by policy (too old)", kmsclients.ErrPermission},
		"key deleted":            {opUnwrap, 400, "encryption key not found", kmsclients.ErrPermission},
		"RSA decryption failure": {opUnwrap, 500, "failed to RSA decrypt the ciphertext: crypto/rsa: decryption error", kmsclients.ErrInvalidCiphertext},
	} {
		t.Run(name, func(t *testing.T) {
			err := classify(tc.op, &api.ResponseError{HTTPMethod: "PUT", URL: "https://v/v1/x", StatusCode: tc.status, Errors: []string{tc.msg}})
			if !errors.Is(err, tc.want) {
				t.Fatalf("classify = %v (kind %s), want %v", err, kmsclients.Kind(err), tc.want)
			}
			if strings.Contains(err.Error(), "https://v/v1/x") {
				t.Fatalf("error %q repeats the request URL", err)
			}
		})
	}
}

func TestClassifyTransport(t *testing.T) {
	refused := &url.Error{Op: "Put", URL: "https://v/v1/x", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	for name, tc := range map[string]struct {
		err  error
		want error
	}{
		"refused":     {refused, kmsclients.ErrUnavailable},
		"reset":       {fmt.Errorf("read: %w", io.ErrUnexpectedEOF), kmsclients.ErrUnavailable},
		"cancelled":   {&url.Error{Op: "Put", URL: "u", Err: context.Canceled}, context.Canceled},
		"deadline":    {&url.Error{Op: "Put", URL: "u", Err: context.DeadlineExceeded}, context.DeadlineExceeded},
		"unavailable": {fmt.Errorf("x: %w", kmsclients.ErrUnavailable), kmsclients.ErrUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			if err := classify(opWrap, tc.err); !errors.Is(err, tc.want) {
				t.Fatalf("classify = %v (kind %s), want %v", err, kmsclients.Kind(err), tc.want)
			}
		})
	}
}

func TestAnswerErrorBounded(t *testing.T) {
	err := classify(opProbe, &api.ResponseError{StatusCode: 502, RawError: true, Errors: []string{strings.Repeat("<html>", 1000)}})
	if len(err.Error()) > maxMessage+100 {
		t.Fatalf("error of %d bytes", len(err.Error()))
	}
}
