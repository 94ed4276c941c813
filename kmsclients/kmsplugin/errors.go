package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// fail sorts a failed call into a kind, makes the cause safe to log, and
// applies [kmsclients.Source.Fail], so the caller sees its own deadline
// even when gRPC's timer fired first. The backend's own timeout is
// unavailable.
func (b *Backend) fail(ctx context.Context, op string, api byte, err error) error {
	kind, fix := b.kindOf(op, api, err)
	cause := describe(err)
	if fix != "" {
		cause = fmt.Errorf("%s: %w", fix, cause)
	}
	return b.src.Fail(ctx, op, kind, cause)
}

// describe bounds and escapes a gRPC error's message: it is the
// custodian's text, and it is logged.
func describe(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &custodianError{st.Code(), clean(st.Message())}
}

// custodianError is a gRPC error of a call to the custodian.
type custodianError struct {
	code codes.Code
	msg  string
}

func (e *custodianError) Error() string {
	return fmt.Sprintf("gRPC %s: %s", e.code, e.msg)
}

// GRPCStatus lets status.Code read the code.
func (e *custodianError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// clean bounds s and escapes what is not printable.
func clean(s string) string {
	if len(s) > maxReason {
		s = s[:maxReason] + "..."
	}
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || (!unicode.IsPrint(r) && r != ' ') {
			b.WriteString(strings.Trim(strconv.QuoteRune(r), "'"))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// kindOf sorts a gRPC error into a kind, or nil (Unknown and Internal
// may be anything). fix says what an operator must do when no retry
// will help, so the error reads as that, not "permission denied".
func (b *Backend) kindOf(op string, api byte, err error) (kind error, fix string) {
	switch status.Code(err) {
	case codes.Unavailable:
		if reason := b.unsafeDir(); reason != "" {
			return kmsclients.ErrPermission, "not connecting to the custodian: " + reason
		}
		if b.dialRefused() {
			return kmsclients.ErrPermission, "cannot connect to the custodian's socket " + b.endpoint + ": permission denied (the socket's owner, group or mode)"
		}
		return kmsclients.ErrUnavailable, ""
	case codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		// The caller's ctx is live: the connection closed under the call.
		return kmsclients.ErrUnavailable, ""
	case codes.PermissionDenied, codes.Unauthenticated, codes.NotFound, codes.FailedPrecondition:
		return kmsclients.ErrPermission, ""
	case codes.Unimplemented:
		return kmsclients.ErrPermission, fmt.Sprintf("the custodian does not serve the KMS %s API: set kmsplugin.apiVersion to the one it serves (a share keeps the API it was wrapped with)", apiName(api))
	case codes.InvalidArgument, codes.DataLoss:
		if op == kmsclients.OpUnwrap {
			return kmsclients.ErrInvalidCiphertext, ""
		}
	}
	return nil, ""
}

// dialRefused reports whether the last connection attempt was refused
// for lack of permission on the socket.
func (b *Backend) dialRefused() bool {
	err, _ := b.lastDial.Load().(dialResult)
	return errors.Is(err.err, fs.ErrPermission)
}

// unsafeDirError: others could write the socket's directory.
type unsafeDirError struct{ err error }

func (e *unsafeDirError) Error() string { return e.err.Error() }

// unsafeDir says why the last dial was not even tried, or "".
func (b *Backend) unsafeDir() string {
	r, _ := b.lastDial.Load().(dialResult)
	var u *unsafeDirError
	if errors.As(r.err, &u) {
		return u.Error()
	}
	return ""
}

// dialResult boxes the last dial error for atomic.Value, which refuses
// nil and mixed types.
type dialResult struct{ err error }
