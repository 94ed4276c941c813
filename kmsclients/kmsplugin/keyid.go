package kmsplugin

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// identityPrefix starts every key identity of this kind.
const identityPrefix = "kmsplugin:"

// custodianPrefix starts the custodian key of a KMS v2 custodian.
const custodianPrefix = "kmsplugin:key_id:"

// identity is "kmsplugin:<endpoint>:<key_id>" for a KMS v2 custodian and
// "kmsplugin:<endpoint>" for a KMS v1 one, which has no key_id. The
// endpoint holds no ':' after its scheme (socketPath refuses one), so the
// first ':' after "kmsplugin:unix://" ends it. A key_id too long to fit
// kmsclients.MaxKeyIdentitySize, not UTF-8, or holding spaces or control characters
// (identities are logged and shown by `trousseau status`), is replaced by
// "sha256-" and the hex SHA-256 of it: the same key_id always gives the
// same identity, and the share's frame keeps the key_id itself for Decrypt.
//
// Whether a long key_id fits depends on the endpoint's length, so one
// key_id of more than maxRawKeyID bytes may be kept as it is under a short
// endpoint and hashed under a long one. The identity keeps that rule, as
// identities already stored in headers and reported by running plugins
// have it (a change would rotate those DEKs, and nodes of two versions
// would disagree on the identity); custodianKey, which must not depend on
// the endpoint, hashes every key_id longer than maxRawKeyID.
func identity(endpoint, keyID string) string {
	if keyID == "" {
		return identityPrefix + endpoint
	}
	return identityPrefix + endpoint + ":" + keyPart(keyID, kmsclients.MaxKeyIdentitySize-len(identityPrefix)-len(endpoint)-1)
}

// maxRawKeyID is the longest key_id that every endpoint Validate accepts
// leaves room for in an identity as it is: the room left by the longest
// endpoint, "unix://" and a path of maxSocketPath bytes.
const maxRawKeyID = kmsclients.MaxKeyIdentitySize - len(identityPrefix) - len("unix://") - maxSocketPath - 1

// hashedPrefix starts a key_id written as its hash.
const hashedPrefix = "sha256-"

func keyPart(keyID string, room int) string {
	printable := utf8.ValidString(keyID) &&
		strings.IndexFunc(keyID, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) < 0
	if printable && len(keyID) <= room && !strings.HasPrefix(keyID, hashedPrefix) {
		return keyID
	}
	return hashKeyID(keyID)
}

func hashKeyID(keyID string) string {
	sum := sha256.Sum256([]byte(keyID))
	return hashedPrefix + hex.EncodeToString(sum[:])
}

// custodianKey names the key behind a key identity by the custodian's
// key_id alone, without the endpoint, so that two backends whose
// custodians report one key_id (one key behind two sockets, two plugins
// of one vendor on one key) are seen as one custodian. A KMS v1 identity
// has no key_id: its endpoint names it.
//
// The key_id part of an identity is the key_id itself or its hash
// (identity), and which of the two depends on the endpoint's length for
// key_ids longer than maxRawKeyID: such a key_id, kept as it is, is
// hashed here, so that both spellings of one key_id, from any endpoint,
// give one custodian key. A key_id of at most maxRawKeyID bytes is kept
// under every endpoint, and its custodian key is unchanged:
// "kmsplugin:key_id:<key_id>". A part that starts with "sha256-" is
// always a hash (identity hashes a key_id that starts so).
func custodianKey(id string) string {
	rest, ok := strings.CutPrefix(id, identityPrefix+"unix://")
	if !ok {
		return id
	}
	if _, key, ok := strings.Cut(rest, ":"); ok && key != "" {
		if len(key) > maxRawKeyID && !strings.HasPrefix(key, hashedPrefix) {
			key = hashKeyID(key)
		}
		return custodianPrefix + key
	}
	return id
}

// stableAfter is how many observations in a row a new key_id needs
// before Probe reports it.
const stableAfter = 2

// keyTracker decides which of the key_ids a custodian names Probe
// reports, so that a key_id flip-flopping (A, B, A) does not rotate the
// DEK twice, nor at all: see the package comment.
type keyTracker struct {
	mu        sync.Mutex
	reported  string // what Probe reports
	candidate string // a key_id seen instead, not yet stable
	seen      int    // how many times in a row candidate was seen
}

// observe records a key_id the custodian named (in Status or in
// Encrypt's answer) and returns the key_id to report.
func (k *keyTracker) observe(keyID string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.reported == "" || keyID == k.reported:
		k.reported, k.candidate, k.seen = keyID, "", 0
	case keyID == k.candidate:
		k.seen++
		if k.seen >= stableAfter {
			k.reported, k.candidate, k.seen = keyID, "", 0
		}
	default:
		k.candidate, k.seen = keyID, 1
	}
	return k.reported
}
