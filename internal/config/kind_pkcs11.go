//go:build !no_pkcs11

package config

import "github.com/trousseau-io/trousseau/kmsclients/pkcs11"

func init() { register(kindOf("pkcs11", pkcs11.New)) }
