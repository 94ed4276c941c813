//go:build !no_vault

package config

import "github.com/trousseau-io/trousseau/kmsclients/vault"

func init() { register(kindOf("vault", vault.New)) }
