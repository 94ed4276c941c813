package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// maxMessage bounds the Vault text kept in an error: a proxy in front of
// Vault may answer with a whole HTML page.
const maxMessage = 300

// The operations an error is sorted for: a 400 answer means something
// different to each. Logging in is this backend's own.
const (
	opWrap   = kmsclients.OpWrap
	opUnwrap = kmsclients.OpUnwrap
	opProbe  = kmsclients.OpProbe
	opLogin  = "login"
)

// classify gives an error of the api client a kind. It keeps network
// errors as they are (they say where the call failed), and words Vault's
// answers anew: the text of *api.ResponseError holds the whole request
// URL and a layout meant for a terminal.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		return answerError(op, re)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if isNetwork(err) {
		return fmt.Errorf("%w: %w", kmsclients.ErrUnavailable, err)
	}
	return err
}

// answerError is a refusal from Vault, reduced to what is safe and useful
// to log: the status, Vault's messages and the kind they are sorted into
// ("permission denied (HTTP 403): ..."), not the request.
func answerError(op string, re *api.ResponseError) error {
	// Vault's multierror text spans lines ("1 error occurred:\n\t* ...");
	// a log line should not.
	msg := strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " ")
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "..."
	}
	kind := kindOfStatus(op, re.StatusCode, msg)
	if kind == nil {
		return kmsclients.Summarize(fmt.Sprintf("HTTP %d: %s", re.StatusCode, msg), re)
	}
	return kmsclients.Summarize(fmt.Sprintf("%v (HTTP %d): %s", kind, re.StatusCode, msg), kind, re)
}

// kindOfStatus sorts Vault's answers.
func kindOfStatus(op string, status int, msg string) error {
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		// Sealed, standby without an active node, rate limited, or down
		// behind a proxy. A failed RSA decryption is the one 5xx that is
		// about the input rather than the server.
		if op == opUnwrap && strings.Contains(msg, "failed to RSA decrypt") {
			return kmsclients.ErrInvalidCiphertext
		}
		return kmsclients.ErrUnavailable
	case status == http.StatusPreconditionFailed:
		// A performance standby has not caught up yet.
		return kmsclients.ErrUnavailable
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return kmsclients.ErrPermission
	case status == http.StatusNotFound:
		// No such mount, key or auth role: an operator must create it.
		return kmsclients.ErrPermission
	case status == http.StatusBadRequest:
		return kindOfBadRequest(op, msg)
	}
	return nil
}

// kindOfBadRequest sorts a 400. For unwrap it means the ciphertext or its
// associated data is wrong, except when the key is missing or its
// min_decryption_version now refuses the share's version: the share is
// sound, an operator chose (or must act). For the other operations a 400
// is a refusal too: a bad login (approle answers 400 to a wrong secret
// ID), a key that cannot encrypt, a key that does not exist.
func kindOfBadRequest(op string, msg string) error {
	if op != opUnwrap {
		return kmsclients.ErrPermission
	}
	switch {
	case strings.Contains(msg, "key not found"), strings.Contains(msg, "disallowed by policy"):
		return kmsclients.ErrPermission
	}
	return kmsclients.ErrInvalidCiphertext
}

// isNetwork reports a call that got no answer from Vault: refused, reset,
// timed out, a DNS failure, a TLS handshake that failed.
func isNetwork(err error) bool {
	var netErr net.Error
	var urlErr *url.Error
	return errors.As(err, &netErr) || errors.As(err, &urlErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// isForbidden reports Vault's answer to a missing, expired or revoked
// token (and to a policy that refuses the path: Vault does not tell the
// two apart).
func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
