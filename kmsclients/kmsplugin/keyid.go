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

const identityPrefix = "kmsplugin:"

const custodianPrefix = "kmsplugin:key_id:"

// identity is "kmsplugin:<endpoint>:<key_id>" (KMS v1: no key_id). The
// endpoint holds no ':' after its scheme, so the first one ends it. A
// key_id that does not fit [kmsclients.MaxKeyIdentitySize] or is not
// printable (identities are logged) becomes "sha256-<hex>"; the frame
// keeps the key_id itself. Whether a long key_id fits depends on the
// endpoint; that rule stays, as stored identities follow it (changing it
// would rotate those DEKs).
func identity(endpoint, keyID string) string {
	if keyID == "" {
		return identityPrefix + endpoint
	}
	return identityPrefix + endpoint + ":" + keyPart(keyID, kmsclients.MaxKeyIdentitySize-len(identityPrefix)-len(endpoint)-1)
}

// maxRawKeyID is the longest key_id that fits an identity under any
// valid endpoint.
const maxRawKeyID = kmsclients.MaxKeyIdentitySize - len(identityPrefix) - len("unix://") - maxSocketPath - 1

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

// custodianKey names the key by key_id alone, so that two backends
// whose custodians report one key_id are one custodian (KMS v1: the
// endpoint). A key_id longer than maxRawKeyID is hashed here whatever
// its identity's spelling, so both spellings give one key.
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

// stableAfter is how many sightings in a row a new key_id needs.
const stableAfter = 2

// keyTracker picks the key_id Probe reports, so that a flip-flop (A, B,
// A) rotates nothing.
type keyTracker struct {
	mu        sync.Mutex
	reported  string // what Probe reports
	candidate string // a key_id seen instead, not yet stable
	seen      int    // how many times in a row candidate was seen
}

// observe records a key_id from Status or Encrypt and returns the one to
// report.
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
