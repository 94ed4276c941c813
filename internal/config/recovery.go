package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// Recovery is the officers' branch (docs/recovery.md, "Break glass"):
// every new DEK is also split k'-of-m for officers who keep age
// identities offline, and every header is signed.
type Recovery struct {
	Threshold int `json:"threshold"`
	// SigningKeyFile holds the header signing key, wrapped by the
	// backends (`trousseau officer signing-key` writes it); every node of
	// a cluster reads the same file.
	SigningKeyFile string    `json:"signingKeyFile"`
	Officers       []Officer `json:"officers"`
}

// Officer is one holder of a recovery share.
type Officer struct {
	Name      string `json:"name"`
	Recipient string `json:"recipient"` // age1... or age1pq1...
}

func (c *Config) validateRecovery(p *problems) {
	r := c.Recovery
	if r == nil {
		return
	}
	if err := split.ValidateThreshold(r.Threshold, len(r.Officers)); err != nil {
		p.add("recovery.threshold", "%s", strings.ReplaceAll(err.Error(), "backend", "officer"))
	}
	seen := map[string]bool{}
	for i, o := range r.Officers {
		field := fmt.Sprintf("recovery.officers[%d]", i)
		if err := kmsclients.ValidateName(o.Name); err != nil {
			p.add(field+".name", "%v", err)
		} else if seen[o.Name] {
			p.add(field+".name", "%s is named twice: each officer needs a name of their own", o.Name)
		}
		seen[o.Name] = true
		if _, err := envelope.ParseRecipient(o.Recipient); err != nil {
			p.add(field+".recipient", "%v", err)
		}
	}
	if !strings.HasPrefix(r.SigningKeyFile, "/") {
		p.add("recovery.signingKeyFile", "must be an absolute path, got %q (make the file with `trousseau officer signing-key`)", r.SigningKeyFile)
	}
	if fipsmode.Mode() == "only" {
		p.add("recovery", "%v", envelope.ErrFIPSOnly)
	}
}

// RecoveryPolicy reads the signing key file and returns the envelope's
// policy, nil without a recovery block.
func (c *Config) RecoveryPolicy() (*envelope.Recovery, error) {
	r := c.Recovery
	if r == nil {
		return nil, nil
	}
	b, err := os.ReadFile(r.SigningKeyFile)
	if err != nil {
		return nil, fmt.Errorf("recovery.signingKeyFile: %w (make it with `trousseau officer signing-key`, once, and copy it to every node)", err)
	}
	key, err := envelope.ParseSigningKey(r.SigningKeyFile, b)
	if err != nil {
		return nil, fmt.Errorf("recovery.signingKeyFile: %w", err)
	}
	out := &envelope.Recovery{Threshold: r.Threshold, SigningKey: key}
	for _, o := range r.Officers {
		out.Officers = append(out.Officers, envelope.Officer{Name: o.Name, Recipient: o.Recipient})
	}
	return out, nil
}
