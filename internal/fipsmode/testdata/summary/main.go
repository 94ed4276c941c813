// Command summary prints fipsmode.Summary, for the package's test to
// build with GOFIPS140 and run under each GODEBUG fips140 setting.
package main

import (
	"fmt"

	"github.com/trousseau-io/trousseau/internal/fipsmode"
)

func main() { fmt.Println(fipsmode.Summary()) }
