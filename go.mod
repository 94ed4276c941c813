module github.com/trousseau-io/trousseau

go 1.26.8

require (
	github.com/hashicorp/golang-lru/v2 v2.0.7
	github.com/hashicorp/vault v1.21.4
)

require golang.org/x/sync v0.25.0
