package azurekv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// fail is the error of op, whose request failed with err from the SDK,
// sorted into a kind. Its text is one short line (the SDK's errors span
// many lines and repeat the request); errors.Is and errors.As still reach
// the SDK's error.
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	kind, detail := classify(op, err)
	return b.src.Fail(ctx, op, kind, kmsclients.Summarize(detail, err))
}

func classify(op string, err error) (kind error, detail string) {
	var credErr *credentialError
	var respErr *azcore.ResponseError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return nil, firstLine(err) // errors.Is reaches it through err
	case errors.As(err, &credErr):
		return credErr.kind(), "sign-in to Microsoft Entra ID failed: " + firstLine(credErr.err)
	case errors.As(err, &respErr):
		return statusKind(op, respErr.StatusCode), describe(respErr)
	default:
		// Whatever kept the request from getting an answer: DNS, TCP,
		// TLS, a proxy, a truncated or garbled response.
		return kmsclients.ErrUnavailable, firstLine(err)
	}
}

// statusKind sorts Key Vault's HTTP status codes.
func statusKind(op string, code int) error {
	switch {
	case code == http.StatusBadRequest && op == kmsclients.OpUnwrap:
		// Key Vault answers 400 when the ciphertext does not decrypt
		// under the key (wrong length, failed OAEP or AES-KW check).
		return kmsclients.ErrInvalidCiphertext
	case code == http.StatusBadRequest, code == http.StatusUnauthorized,
		code == http.StatusForbidden, code == http.StatusNotFound:
		// Refused as configured (algorithm the key cannot do, missing
		// role, disabled or expired key, deleted key or version):
		// retrying will not help until an operator acts.
		return kmsclients.ErrPermission
	case code == http.StatusRequestTimeout, code == http.StatusConflict,
		code == http.StatusTooManyRequests, code >= 500:
		return kmsclients.ErrUnavailable
	}
	return nil
}

// describe makes one line of a Key Vault error response.
func describe(e *azcore.ResponseError) string {
	s := fmt.Sprintf("HTTP %d", e.StatusCode)
	if e.ErrorCode != "" {
		s += " " + e.ErrorCode
	}
	if msg := serviceMessage(e.RawResponse); msg != "" {
		s += ": " + msg
	}
	return s
}

// serviceMessage reads error.message from Key Vault's error body.
func serviceMessage(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	body, err := runtime.Payload(resp)
	if err != nil {
		return ""
	}
	var v struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return truncate(v.Error.Message)
}

func firstLine(err error) string {
	line, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
	return truncate(strings.TrimSpace(line))
}

func truncate(s string) string {
	const limit = 300
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}

// credentialError marks a failure of the token credential. The SDK
// returns it through the same pipeline as the vault's answers, and it
// must not be mistaken for one: a 400 from Entra ID says nothing about
// a ciphertext.
type credentialError struct{ err error }

func (e *credentialError) Error() string { return e.err.Error() }
func (e *credentialError) Unwrap() error { return e.err }

// kind: Entra ID throttling, its server errors and network trouble on
// the way to it are transient; anything else (unknown client, bad secret,
// expired certificate, no managed identity) needs an operator.
func (e *credentialError) kind() error {
	var authErr *azidentity.AuthenticationFailedError
	if errors.As(e.err, &authErr) && authErr.RawResponse != nil {
		code := authErr.RawResponse.StatusCode
		if code == http.StatusTooManyRequests || code >= 500 {
			return kmsclients.ErrUnavailable
		}
	}
	var netErr net.Error
	if errors.As(e.err, &netErr) {
		return kmsclients.ErrUnavailable
	}
	return kmsclients.ErrPermission
}

// markedCredential wraps the errors of a credential in credentialError.
type markedCredential struct{ cred azcore.TokenCredential }

func (m markedCredential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := m.cred.GetToken(ctx, opts)
	if err != nil {
		return tok, &credentialError{err}
	}
	return tok, nil
}
