package envelope_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// Three key-file backends, any two of which can decrypt.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "envelope-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	var backends []kmsclients.Backend
	for _, name := range []string{"a", "b", "c"} {
		keyFile := filepath.Join(dir, name+".key")
		if err := local.GenerateKeyFile(keyFile); err != nil {
			log.Fatal(err)
		}
		b, err := local.New(ctx, name, local.Config{KeyFile: keyFile})
		if err != nil {
			log.Fatal(err)
		}
		backends = append(backends, b)
	}
	cfg := envelope.Config{Threshold: 2, Backends: backends, StateDir: filepath.Join(dir, "state")}
	env, err := envelope.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := env.Prepare(ctx); err != nil { // the first DEK: all three answer
		log.Fatal(err)
	}
	sealed, err := env.Encrypt([]byte("a secret"))
	if err != nil {
		log.Fatal(err)
	}

	// Another process with the same backends and state dir: it keeps the
	// key id, and opens the ciphertext with the header stored beside it.
	restarted, err := envelope.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	plaintext, err := restarted.Decrypt(ctx, sealed.Ciphertext, sealed.Header)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", plaintext)
	fmt.Println("same key id:", restarted.KeyID() == sealed.KeyID)
	// Output:
	// a secret
	// same key id: true
}
