package awskms

import (
	"errors"
	"net"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// codeKinds sorts KMS and STS error codes that are not the SDK's
// throttling and retryable ones (all unavailable).
var codeKinds = map[string]error{
	// The wrapped share is corrupt, its context differs, or another key
	// wrapped it.
	"InvalidCiphertextException": kmsclients.ErrInvalidCiphertext,
	"IncorrectKeyException":      kmsclients.ErrInvalidCiphertext,

	// KMS answered and refused: an operator must act.
	"AccessDeniedException":         kmsclients.ErrPermission,
	"AccessDenied":                  kmsclients.ErrPermission,
	"DisabledException":             kmsclients.ErrPermission,
	"KMSInvalidStateException":      kmsclients.ErrPermission,
	"NotFoundException":             kmsclients.ErrPermission,
	"InvalidKeyUsageException":      kmsclients.ErrPermission,
	"InvalidArnException":           kmsclients.ErrPermission,
	"UnsupportedOperationException": kmsclients.ErrPermission,
	"UnrecognizedClientException":   kmsclients.ErrPermission,
	"InvalidSignatureException":     kmsclients.ErrPermission,
	"IncompleteSignature":           kmsclients.ErrPermission,
	"SignatureDoesNotMatch":         kmsclients.ErrPermission,
	"MissingAuthenticationToken":    kmsclients.ErrPermission,
	"InvalidClientTokenId":          kmsclients.ErrPermission,
	"ExpiredToken":                  kmsclients.ErrPermission,
	"ExpiredTokenException":         kmsclients.ErrPermission,
	"RegionDisabledException":       kmsclients.ErrPermission,

	// KMS or what it depends on failed; retrying later may work.
	"KMSInternalException":        kmsclients.ErrUnavailable,
	"DependencyTimeoutException":  kmsclients.ErrUnavailable,
	"KeyUnavailableException":     kmsclients.ErrUnavailable,
	"InternalFailure":             kmsclients.ErrUnavailable,
	"ServiceUnavailable":          kmsclients.ErrUnavailable,
	"ServiceUnavailableException": kmsclients.ErrUnavailable,
}

// kindOf sorts an SDK error into a kmsclients kind, or nil when it is none
// of them (a malformed request, an unknown client-side failure).
func kindOf(err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if kind := kindOfCode(apiErr.ErrorCode()); kind != nil {
			return kind
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		switch status := respErr.HTTPStatusCode(); {
		case status == http.StatusTooManyRequests || status >= 500:
			return kmsclients.ErrUnavailable
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			return kmsclients.ErrPermission
		}
	}
	// No answer at all (refused, reset, timed out, DNS); the SDK reports
	// that too as a response error, of status 0.
	var sendErr *smithyhttp.RequestSendError
	var netErr net.Error
	if errors.As(err, &sendErr) || errors.As(err, &netErr) {
		return kmsclients.ErrUnavailable
	}
	return nil
}

func kindOfCode(code string) error {
	if kind, ok := codeKinds[code]; ok {
		return kind
	}
	if _, ok := retry.DefaultThrottleErrorCodes[code]; ok {
		return kmsclients.ErrUnavailable
	}
	if _, ok := retry.DefaultRetryableErrorCodes[code]; ok {
		return kmsclients.ErrUnavailable
	}
	return nil
}
