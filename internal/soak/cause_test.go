package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestCauseSortsFailures(t *testing.T) {
	secrets := schema.GroupResource{Resource: "secrets"}
	refused := &url.Error{Op: "Get", URL: "https://127.0.0.1:1", Err: &net.OpError{Op: "dial", Err: fmt.Errorf("connect: %w", syscall.ECONNREFUSED)}}
	for _, c := range []struct {
		err  error
		want string
	}{
		{refused, "connection-refused"},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "connection-reset"},
		{fmt.Errorf("put: %w", context.DeadlineExceeded), "timeout"},
		{apierrors.NewConflict(secrets, "a", errors.New("changed")), "conflict"},
		{apierrors.NewInternalError(errors.New("StorageError: corrupt object, data from the storage is not transformable revision=0: failed to decrypt DEK")), "kms-transform"},
		{apierrors.NewInternalError(errors.New("boom")), "internal-error"},
		{apierrors.NewServiceUnavailable("later"), "unavailable"},
		{apierrors.NewForbidden(secrets, "a", errors.New("no")), "api-forbidden"},
		{errors.New("something else"), "other"},
	} {
		if got := Cause(c.err); got != c.want {
			t.Errorf("%v: %s, want %s", c.err, got, c.want)
		}
	}
}
