package main

import "maps"

// The -o json fields of recovery and drills through the officers' branch,
// kept apart from fieldDocs' own file, which others edit too.
func init() {
	maps.Copy(fieldDocs, map[string]string{
		"trousseau recover deks[].officers":                    "through the officers (--officer-identity): how it did; absent through the custodians",
		"trousseau recover deks[].officers.branch":             "its header has an officers' branch",
		"trousseau recover deks[].officers.threshold":          "k': officers' shares needed",
		"trousseau recover deks[].officers.officers":           "m: officers' shares in the header",
		"trousseau recover deks[].officers.signature":          "the header's signature against the packet: `valid`, `unsigned`, `unknown-key` or `invalid`; anything but valid is refused unless --accept-unsigned",
		"trousseau recover deks[].officers.acceptedUnsigned":   "opened although its signature is not valid, by --accept-unsigned",
		"trousseau recover deks[].officers.opened":             "the officers whose shares opened, in header order",
		"trousseau drill custodians":                           "the custodians were drilled (--config); false: deks[].backends and deks[].margin were not checked",
		"trousseau drill deks[].officers":                      "its officers' branch, with --officer-packet",
		"trousseau drill deks[].officers.branch":               "its header has an officers' branch (false fails the drill)",
		"trousseau drill deks[].officers.threshold":            "k'",
		"trousseau drill deks[].officers.officers":             "m: officers' shares in the header",
		"trousseau drill deks[].officers.signature":            "against the packet's signing keys: `valid`, `unsigned`, `unknown-key` or `invalid` (all but valid fail the drill)",
		"trousseau drill deks[].officers.shares":               "one per officer's share, in header order",
		"trousseau drill deks[].officers.shares[].index":       "its place in the split, from 1",
		"trousseau drill deks[].officers.shares[].officer":     "the officer the header names",
		"trousseau drill deks[].officers.shares[].recipientID": "the recipient it is sealed to (hex), as the packet lists them",
		"trousseau drill deks[].officers.shares[].holder":      "the packet's officer with that recipient; absent: unknown to the packet",
		"trousseau drill deks[].officers.shares[].opened":      "an identity given opened it",
		"trousseau drill deks[].officers.margin":               "shares sealed to officers the packet knows, minus k'; below 0 fails the drill",
		"trousseau drill deks[].officers.proof":                "with --officer-identity: `proved` (k' shares opened and combine to the DEK), `partial` (fewer opened), `refused` (signature) or `failed` (they do not combine)",
		"trousseau drill deks[].officers.opened":               "the officers whose shares the identities opened",
		"trousseau drill deks[].officers.proofError":           "why the proof is not complete",
		"trousseau drill deks[].officers.problem":              "why this DEK fails the officers' drill",
	})
}
