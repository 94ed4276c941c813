// Command summary prints fipsmode.Summary for the package's test.
package main

import (
	"fmt"

	"github.com/trousseau-io/trousseau/internal/fipsmode"
)

func main() { fmt.Println(fipsmode.Summary()) }
