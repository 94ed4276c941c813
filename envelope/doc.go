// Package envelope is Trousseau's threshold envelope. It is a supported
// library API, not only the plugin's internals: other programs may import
// it to seal and open data under threshold custody, and what one release
// writes (headers, ciphertexts, the state file) later ones read.
//
// A local data-encryption key (DEK) seals each plaintext with AES-256-GCM;
// the DEK is split k-of-n ([split]) and each share is wrapped by a
// different [kmsclients.Backend]. The wrapped shares travel in a header
// beside every ciphertext, so any process with any k backends can
// decrypt, and fewer than k learn nothing.
//
// [New] makes an [Envelope]; [Envelope.Prepare] creates the current DEK
// (all n backends must answer, once) or unlocks the stored one (k must).
// [Envelope.Encrypt] then makes no remote call. [Envelope.Decrypt] finds
// DEKs in a bounded cache and, on a miss, asks every backend at once and
// combines as soon as k shares fit the header's commitment.
package envelope
