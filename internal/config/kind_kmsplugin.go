//go:build !no_kmsplugin

package config

import (
	"errors"
	"fmt"

	"github.com/trousseau-io/trousseau/kmsclients/kmsplugin"
)

func init() {
	k := kindOf("kmsplugin", kmsplugin.New)
	k.checkAll = (*Config).validateEndpoints
	register(k)
}

// validateEndpoints refuses a kmsplugin endpoint that is Trousseau's own
// socket (the plugin would be a custodian of its own shares) and two
// kmsplugin backends on one socket (one custodian would hold two
// shares), however the socket is named (a symlink, a hard link, a "../"
// path): kmsplugin.CheckEndpoints compares them. Custodians that are one
// key behind two sockets are found by `config check` and the envelope,
// from the key_id they report.
func (c *Config) validateEndpoints(p *problems) {
	var endpoints []string
	var backend []int // the index in backends of each endpoint
	for i, b := range c.Backends {
		if k, ok := b.Spec.(*kmsplugin.Config); ok && k != nil {
			endpoints = append(endpoints, k.Endpoint)
			backend = append(backend, i)
		}
	}
	err := kmsplugin.CheckEndpoints(c.Socket, endpoints)
	if err == nil {
		return
	}
	errs := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	}
	for _, err := range errs {
		var e *kmsplugin.EndpointError
		if !errors.As(err, &e) {
			*p = append(*p, err)
			continue
		}
		field := fmt.Sprintf("backends[%d].kmsplugin.endpoint", backend[e.Index])
		if e.Other < 0 {
			p.add(field, "%s is Trousseau's own socket (socket: %s): the plugin cannot be a custodian of its own shares", e.Endpoint, e.OtherEndpoint)
			continue
		}
		other := fmt.Sprintf("backends[%d]", backend[e.Other])
		if e.OtherEndpoint != e.Endpoint {
			other += " (" + e.OtherEndpoint + ")"
		}
		p.add(field, "%s is already the socket of %s: one custodian would hold two shares", e.Endpoint, other)
	}
}
