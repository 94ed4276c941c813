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

// validateEndpoints refuses, however named ([kmsplugin.CheckEndpoints]),
// an endpoint that is Trousseau's own socket (custodian of its own
// shares) and two backends on one socket (one custodian, two shares).
// `config check` and the envelope find one key behind two sockets.
func (c *Config) validateEndpoints(p *problems) {
	var endpoints []string
	var backend []int // each endpoint's index in backends
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
