//go:build !no_awskms

package config

import "github.com/trousseau-io/trousseau/kmsclients/awskms"

func init() { register(kindOf("awskms", awskms.New)) }
