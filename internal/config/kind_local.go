package config

import "github.com/trousseau-io/trousseau/kmsclients/local"

func init() { register(kindOf("local", local.New)) }
