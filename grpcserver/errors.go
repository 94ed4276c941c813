package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// What a socket caller may read of a failure. kube-apiserver may relay a
// gRPC message in an HTTP 500 to whoever made the request, so messages are
// fixed reasons, never error text: backend errors hold paths, URLs and
// ARNs, and a header's names are whatever an etcd writer put there.
const (
	reasonInvalid     = "invalid ciphertext: the wrapped DEK or ciphertext is malformed or was tampered with"
	reasonNotReady    = "not ready: no usable DEK yet"
	reasonDeadline    = "deadline exceeded: the DEK was not recovered in time"
	reasonCanceled    = "canceled: the caller gave up"
	reasonPermission  = "unavailable: a backend refused access"
	reasonUnavailable = "unavailable: a backend could not be reached"
	reasonQuorum      = "unavailable: too few backends answered to recover the DEK"
	reasonBusy        = "unavailable: too many DEK unwraps in progress, retry"
	reasonInternal    = "internal error"
	seeLog            = " (see the plugin log)"
)

// publicError maps err to a gRPC code and a message safe to show anyone:
// a fixed reason and, for a failed unwrap, counts of backends.
func publicError(err error) (codes.Code, string) {
	code, reason := classify(err)
	var qe *envelope.QuorumError
	if errors.As(err, &qe) && code != codes.Internal && code != codes.Canceled {
		if code == codes.Unavailable {
			reason = reasonQuorum
		}
		reason += ": " + quorumCounts(qe)
	}
	if code != codes.Canceled {
		reason += seeLog
	}
	return code, reason
}

func classify(err error) (codes.Code, string) {
	switch {
	case errors.Is(err, envelope.ErrInvalid):
		return codes.InvalidArgument, reasonInvalid
	case errors.Is(err, envelope.ErrNotReady):
		return codes.Unavailable, reasonNotReady
	case errors.Is(err, envelope.ErrBusy):
		return codes.Unavailable, reasonBusy
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, reasonDeadline
	case errors.Is(err, context.Canceled):
		return codes.Canceled, reasonCanceled
	case errors.Is(err, kmsclients.ErrPermission):
		return codes.Unavailable, reasonPermission
	case errors.Is(err, kmsclients.ErrUnavailable):
		return codes.Unavailable, reasonUnavailable
	}
	return codes.Internal, reasonInternal
}

// quorumCounts says how far an unwrap got in numbers and error kinds
// only: a header's names are attacker-controlled.
func quorumCounts(qe *envelope.QuorumError) string {
	s := fmt.Sprintf("%d of %d needed, %d answered", qe.Threshold, qe.Backends, len(qe.Unwrapped))
	if qe.Mismatch {
		s += ", and their shares do not fit the wrapped DEK"
	}
	kinds := map[string]int{}
	for _, err := range qe.Failures {
		kinds[kmsclients.Kind(err)]++
	}
	parts := make([]string, 0, len(kinds))
	for k, n := range kinds {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(parts)
	if len(parts) > 0 {
		s += "; failed: " + strings.Join(parts, ", ")
	}
	return s
}

// fail logs err in full and returns the public status: a warning for a
// bad or abandoned request, an error when a good one fails.
func (s *Services) fail(ctx context.Context, uid string, err error) error {
	code, msg := publicError(err)
	level := slog.LevelError
	switch code {
	case codes.InvalidArgument, codes.Canceled, codes.DeadlineExceeded:
		level = slog.LevelWarn
	}
	method, _ := grpc.Method(ctx)
	s.log.Log(ctx, level, "request failed", "method", method, "uid", uid, "code", code.String(), "error", err)
	return status.Error(code, msg)
}

// invalid reports a request over the contract's limits, naming the field
// and sizes, never the request's bytes.
func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
