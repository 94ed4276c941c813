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

// classify gives an api client error a kind. Vault's answers are worded
// anew: *api.ResponseError's text holds the whole URL and a terminal
// layout.
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

// answerError keeps of a refusal the status, Vault's messages and the
// kind, not the request.
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
		// Sealed, leaderless, rate limited or down, except a failed RSA
		// decryption: about the input, not the server.
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

// kindOfBadRequest sorts a 400: for unwrap a bad ciphertext or
// associated data, unless the key is missing or min_decryption_version
// refuses the share (an operator's doing); otherwise a refusal (approle
// answers 400 to a wrong secret ID).
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

// isNetwork reports a call that got no answer (refused, reset, timeout,
// DNS, TLS).
func isNetwork(err error) bool {
	var netErr net.Error
	var urlErr *url.Error
	return errors.As(err, &netErr) || errors.As(err, &urlErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// isForbidden reports a 403: a dead token or a refusing policy, which
// Vault does not tell apart.
func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
