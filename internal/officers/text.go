package officers

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteText writes p for people: to print and keep beside its file.
func (p *Packet) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Trousseau officers' packet (version %d), made %s\n\n", p.Version, p.Created.Format(time.RFC3339))
	fmt.Fprintf(&b, "Recovery needs any %d of these %d officers:\n", p.Threshold, len(p.Officers))
	writeOfficers(&b, p.Officers)
	b.WriteString("\nHeader signing public keys (the first is current):\n")
	for _, k := range p.SigningKeys {
		fmt.Fprintf(&b, "  %s  signer id %s  made %s\n", base64.StdEncoding.EncodeToString(k.PublicKey), k.SignerID, k.Created.Format(time.RFC3339))
	}
	if len(p.Previous) > 0 {
		b.WriteString("\nEarlier policies (who holds shares of older DEKs):\n")
	}
	for _, prev := range p.Previous {
		fmt.Fprintf(&b, "  until %s, any %d of %d:\n", prev.Until.Format(time.RFC3339), prev.Threshold, len(prev.Officers))
		writeOfficers(&b, prev.Officers)
	}
	b.WriteString("\nProcedure:\n")
	for i, step := range p.Procedure {
		fmt.Fprintf(&b, "  %d. %s\n", i+1, step)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeOfficers(b *strings.Builder, list []Officer) {
	for _, o := range list {
		fmt.Fprintf(b, "  - %s (recipient id %s): %s\n", o.Name, o.RecipientID, o.Recipient)
	}
}
