//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// Return values the binding does not name (PKCS#11 3.0).
const (
	ckrAEADDecryptFailed = 0x35
	ckaUniqueID          = 0x4
)

// callError is a failed call into the module: all an error says of it is
// the function and its CKR_* value.
type callError struct {
	fn   string // "C_Decrypt"
	code uint
}

func (e *callError) Error() string { return e.fn + ": " + ckrName(e.code) }

// Unwrap returns the binding's error, for errors.As.
func (e *callError) Unwrap() error { return pkcs11.Error(e.code) }

// called returns fn's err as a *callError (nil for nil).
func called(fn string, err error) error {
	if err == nil {
		return nil
	}
	var code pkcs11.Error
	if !errors.As(err, &code) {
		return fmt.Errorf("%s: %w", fn, err)
	}
	return &callError{fn: fn, code: uint(code)}
}

// ckrName is a return value as PKCS#11 names it: "CKR_PIN_INCORRECT".
func ckrName(code uint) string {
	// The binding's text is "pkcs11: 0x%X: NAME", NAME empty when unknown.
	text := pkcs11.Error(code).Error()
	if i := strings.LastIndex(text, ": "); i >= 0 && strings.HasPrefix(text[i+2:], "CKR_") {
		return text[i+2:]
	}
	if code == ckrAEADDecryptFailed {
		return "CKR_AEAD_DECRYPT_FAILED"
	}
	if code >= pkcs11.CKR_VENDOR_DEFINED {
		return fmt.Sprintf("CKR_VENDOR_DEFINED+0x%X", code-pkcs11.CKR_VENDOR_DEFINED)
	}
	return fmt.Sprintf("CKR 0x%08X", code)
}

// codeOf is the return value err carries, if it is a failed call.
func codeOf(err error) (uint, bool) {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.code, true
	}
	return 0, false
}

// kindOf sorts a return value of op into a kmsclients kind.
func kindOf(op string, code uint) error {
	switch code {
	case pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID,
		pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_SESSION_COUNT,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED, pkcs11.CKR_HOST_MEMORY,
		pkcs11.CKR_FUNCTION_CANCELED, pkcs11.CKR_OPERATION_ACTIVE, pkcs11.CKR_CANT_LOCK,
		pkcs11.CKR_FIPS_SELF_TEST_FAILED:
		// Token, link, session or module gone: it may come back.
		return kmsclients.ErrUnavailable
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE,
		pkcs11.CKR_PIN_EXPIRED, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_USER_PIN_NOT_INITIALIZED,
		pkcs11.CKR_USER_TYPE_INVALID, pkcs11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN, pkcs11.CKR_USER_TOO_MANY_TYPES,
		pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID,
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_KEY_SIZE_RANGE,
		pkcs11.CKR_KEY_NOT_WRAPPABLE, pkcs11.CKR_KEY_UNEXTRACTABLE,
		pkcs11.CKR_WRAPPING_KEY_HANDLE_INVALID, pkcs11.CKR_WRAPPING_KEY_SIZE_RANGE, pkcs11.CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
		pkcs11.CKR_UNWRAPPING_KEY_HANDLE_INVALID, pkcs11.CKR_UNWRAPPING_KEY_SIZE_RANGE, pkcs11.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
		pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID, pkcs11.CKR_FUNCTION_NOT_SUPPORTED,
		pkcs11.CKR_TEMPLATE_INCOMPLETE, pkcs11.CKR_TEMPLATE_INCONSISTENT,
		pkcs11.CKR_ATTRIBUTE_READ_ONLY, pkcs11.CKR_ATTRIBUTE_SENSITIVE, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID,
		pkcs11.CKR_ACTION_PROHIBITED, pkcs11.CKR_FUNCTION_REJECTED, pkcs11.CKR_SESSION_READ_ONLY,
		pkcs11.CKR_TOKEN_WRITE_PROTECTED, pkcs11.CKR_INFORMATION_SENSITIVE:
		// Refused as configured (PIN, user, key attributes, mechanism):
		// an operator must act.
		return kmsclients.ErrPermission
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE,
		ckrAEADDecryptFailed, pkcs11.CKR_SIGNATURE_INVALID, pkcs11.CKR_SIGNATURE_LEN_RANGE,
		pkcs11.CKR_DATA_INVALID, pkcs11.CKR_DATA_LEN_RANGE:
		if op == kmsclients.OpUnwrap {
			return kmsclients.ErrInvalidCiphertext
		}
	}
	return nil
}

// sessionLost reports a failure after which another session, logged in
// again, may work (a stale key handle is looked up again).
func sessionLost(err error) bool {
	if errors.Is(err, errStale) {
		return true
	}
	code, ok := codeOf(err)
	if !ok {
		return false
	}
	switch code {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_USER_NOT_LOGGED_IN,
		pkcs11.CKR_OPERATION_ACTIVE, pkcs11.CKR_OPERATION_NOT_INITIALIZED,
		pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID:
		return true
	}
	return false
}

// sessionsDropped reports a failure a token inflicts on all sessions at
// once (restart, timeout, logout): the idle ones are likely gone too.
func sessionsDropped(err error) bool {
	code, ok := codeOf(err)
	return ok && (code == pkcs11.CKR_SESSION_HANDLE_INVALID || code == pkcs11.CKR_SESSION_CLOSED || code == pkcs11.CKR_USER_NOT_LOGGED_IN)
}

// tokenLost reports a failure only re-initialising the module may mend:
// modules (SoftHSM2) list tokens at C_Initialize, so a token removed,
// re-created or re-initialised is seen only after a reset.
func tokenLost(err error) bool {
	if errors.Is(err, errTokenNotFound) || errors.Is(err, errTokenChanged) {
		return true
	}
	var ce *callError
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.code {
	case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_DEVICE_ERROR:
		return true
	case pkcs11.CKR_GENERAL_ERROR:
		// SoftHSM2's answer about a token deleted under it.
		return ce.fn == "C_GetTokenInfo"
	}
	return false
}

// ambiguous reports an unwrap failure that says nothing of why (SoftHSM2
// answers CKR_GENERAL_ERROR to a bad GCM tag): a self-test tells a bad
// share from a bad token.
func ambiguous(err error) bool {
	code, ok := codeOf(err)
	return ok && (code == pkcs11.CKR_GENERAL_ERROR || code == pkcs11.CKR_FUNCTION_FAILED)
}

// kinded is an error of a kind its text does not spell out (a PIN
// file's fault reads as what is wrong with the file).
type kinded struct {
	kind error
	err  error
}

func (e *kinded) Error() string   { return e.err.Error() }
func (e *kinded) Unwrap() []error { return []error{e.kind, e.err} }

func withKind(kind error, format string, args ...any) error {
	return &kinded{kind: kind, err: fmt.Errorf(format, args...)}
}

// fail is op's error, of the cause's kind (or its return value's),
// through [kmsclients.Source.Fail].
func (b *Backend) fail(ctx context.Context, op string, err error) error {
	var made *kmsclients.Error
	if errors.As(err, &made) {
		return err
	}
	var kind error
	for _, k := range []error{kmsclients.ErrUnavailable, kmsclients.ErrPermission, kmsclients.ErrInvalidCiphertext} {
		if errors.Is(err, k) {
			kind = k
			break
		}
	}
	if code, ok := codeOf(err); ok && kind == nil {
		kind = kindOf(op, code)
	}
	return b.src.Fail(ctx, op, kind, err)
}
