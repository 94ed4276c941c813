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

// fail is the error of op, whose call to the custodian with the KMS api
// failed with err: sorted into a kind, the cause made safe to log (see
// describe), and the context rule applied by kmsclients.Source.Fail, so
// that a caller sees its own cancellation or deadline whatever gRPC made
// of it, also when gRPC's own timer for that deadline fired a moment
// before ctx's. A deadline of the backend's own timeout is the custodian
// not answering in time: unavailable.
func (b *Backend) fail(ctx context.Context, op string, api byte, err error) error {
	kind, fix := b.kindOf(op, api, err)
	cause := describe(err)
	if fix != "" {
		cause = fmt.Errorf("%s: %w", fix, cause)
	}
	return b.src.Fail(ctx, op, kind, cause)
}

// describe replaces a gRPC status error by one whose message is bounded
// and has its control characters escaped: it is mostly the custodian's
// text, and it goes to the log.
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

// kindOf sorts a gRPC error of the custodian into a kmsclients kind, or
// nil when it is none of them (Unknown and Internal: a vendor plugin
// reports most failures of its KMS so, and they may be anything). For an
// answer that no retry will change until an operator acts, fix says what
// to do: the error reads as that, not as "permission denied".
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
		// Canceled with the caller's ctx still live: the connection
		// was closed under the call.
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

// unsafeDirError: the custodian's socket directory could be written by
// someone who could then put a fake custodian there.
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

// dialResult boxes the last dial error (nil on success) for atomic.Value,
// which refuses nil and mixed types.
type dialResult struct{ err error }
