//go:build !no_gcpkms

package config

import "github.com/trousseau-io/trousseau/kmsclients/gcpkms"

func init() { register(kindOf("gcpkms", gcpkms.New)) }
