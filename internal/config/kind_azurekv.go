//go:build !no_azurekv

package config

import "github.com/trousseau-io/trousseau/kmsclients/azurekv"

func init() { register(kindOf("azurekv", azurekv.New)) }
