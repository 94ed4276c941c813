package gcpkms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Retries of Unavailable and ResourceExhausted. One that could not end
// before the deadline is not made, so the caller hears Cloud KMS's answer
// rather than a bare deadline.
const (
	maxAttempts  = 4
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = time.Second
)

// callOptions are the gax options of one call under ctx, made just
// before it.
func callOptions(ctx context.Context) []gax.CallOption {
	deadline, _ := ctx.Deadline()
	start := time.Now()
	return []gax.CallOption{gax.WithRetry(func() gax.Retryer {
		return &retryer{
			deadline:     deadline,
			attemptStart: start,
			backoff:      gax.Backoff{Initial: firstBackoff, Max: maxBackoff, Multiplier: 2},
		}
	})}
}

type retryer struct {
	deadline     time.Time // zero: none
	attemptStart time.Time
	backoff      gax.Backoff
	attempts     int
}

// Retry implements gax.Retryer. A retry is made only if its pause and an
// attempt as long as the last one fit before the deadline.
func (r *retryer) Retry(err error) (time.Duration, bool) {
	r.attempts++
	if r.attempts >= maxAttempts {
		return 0, false
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.ResourceExhausted:
	default:
		return 0, false
	}
	if strings.HasPrefix(st.Message(), tokenErrorText) {
		return 0, false // the token source has made its own retries
	}
	now := time.Now()
	took := now.Sub(r.attemptStart)
	pause := r.backoff.Pause()
	if !r.deadline.IsZero() && r.deadline.Sub(now) <= pause+took {
		return 0, false
	}
	r.attemptStart = now.Add(pause)
	return pause, true
}

// fail sorts err into a kind under [kmsclients.Source.Fail], in one line.
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	return b.failAs(ctx, op, nil, "", err)
}

// failAs is fail with a kind (nil: the code's) and a prefix.
func (b *Backend) failAs(ctx context.Context, op string, kind error, prefix string, err error) error {
	st := status.Convert(err)
	if kind == nil {
		kind = kindOf(op, st.Code())
	}
	summary := fmt.Sprintf("%sCloud KMS: %s: %s", prefix, st.Code(), oneLine(st.Message()))
	return b.src.Fail(ctx, op, kind, kmsclients.Summarize(summary, err))
}

// kindOf sorts the gRPC codes of Cloud KMS's answers.
func kindOf(op string, code codes.Code) error {
	switch code {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded,
		codes.Aborted, codes.Internal, codes.Unknown:
		// No answer, a quota, a timeout of the backend's own, or a
		// failure on Google's side: retrying later may work.
		return kmsclients.ErrUnavailable
	case codes.PermissionDenied, codes.Unauthenticated, codes.NotFound,
		codes.FailedPrecondition, codes.Unimplemented:
		// Refused as configured: missing role, bad credentials, a key
		// that does not exist (or is not visible), a disabled or
		// destroyed version, an endpoint that serves no Cloud KMS.
		return kmsclients.ErrPermission
	case codes.InvalidArgument, codes.OutOfRange, codes.DataLoss:
		if op == kmsclients.OpUnwrap {
			// Decrypt's answer to a ciphertext that does not open under
			// the key with this associated data.
			return kmsclients.ErrInvalidCiphertext
		}
		return kmsclients.ErrPermission
	}
	return nil
}

// checkEncrypted checks the integrity fields of Encrypt's answer to a
// request that carried both checksums.
func checkEncrypted(resp *kmspb.EncryptResponse) error {
	switch {
	case !resp.GetVerifiedPlaintextCrc32C():
		return errors.New("Cloud KMS did not verify the checksum of the share it received")
	case !resp.GetVerifiedAdditionalAuthenticatedDataCrc32C():
		return errors.New("Cloud KMS did not verify the checksum of the associated data it received")
	case len(resp.GetCiphertext()) == 0:
		return errors.New("Cloud KMS returned an empty ciphertext")
	case !matches(resp.GetCiphertextCrc32C(), resp.GetCiphertext()):
		return errors.New("the ciphertext Cloud KMS returned does not match its checksum")
	}
	return nil
}

// checkDecrypted checks the integrity field of Decrypt's answer.
func checkDecrypted(resp *kmspb.DecryptResponse) error {
	if !matches(resp.GetPlaintextCrc32C(), resp.GetPlaintext()) {
		return errors.New("the share Cloud KMS returned does not match its checksum")
	}
	if len(resp.GetPlaintext()) == 0 {
		return errors.New("Cloud KMS returned an empty share")
	}
	return nil
}

// oneLine is the first line of s, bounded.
func oneLine(s string) string {
	const limit = 300
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	line = strings.TrimSpace(line)
	if len(line) > limit {
		return line[:limit] + "..."
	}
	return line
}
