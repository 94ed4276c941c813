package soak

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Cause sorts a failed request's error into one of a few causes for the
// report.
func Cause(err error) string {
	var ne net.Error
	switch {
	case apierrors.IsConflict(err):
		return "conflict"
	case apierrors.IsNotFound(err):
		return "not-found"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection-refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "http2: client connection lost"):
		return "connection-reset"
	case errors.Is(err, context.DeadlineExceeded), apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "data from the storage is not transformable"):
		return "kms-transform" // kube-apiserver's KMS call failed or timed out
	case apierrors.IsInternalError(err):
		return "internal-error"
	case apierrors.IsServiceUnavailable(err), apierrors.IsTooManyRequests(err):
		return "unavailable"
	case apierrors.ReasonForError(err) != metav1.StatusReasonUnknown:
		return "api-" + strings.ToLower(string(apierrors.ReasonForError(err)))
	}
	return "other"
}
