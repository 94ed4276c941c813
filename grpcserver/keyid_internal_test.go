package grpcserver

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDecryptRemembersKeyID: a header's key_id is worked out once, and a
// remembered key_id still refuses a request that names another, before
// the envelope (and so any backend) is called.
func TestDecryptRemembersKeyID(t *testing.T) {
	s, other := sealed(t), sealed(t)
	env := &counting{}
	v2 := v2Service{Services: NewServices(env, nil, "test", slog.New(slog.DiscardHandler))}
	ctx := context.Background()
	if _, err := v2.Decrypt(ctx, decryptRequest(s)); err != nil {
		t.Fatal(err)
	}
	if id, ok := v2.keyIDs.get(s.Header); !ok || id != s.KeyID {
		t.Fatalf("remembered key_id = %q, %v; want %q", id, ok, s.KeyID)
	}
	req := decryptRequest(s)
	req.KeyId = other.KeyID
	_, err := v2.Decrypt(ctx, req)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "key_id does not match") {
		t.Fatalf("mismatched key_id of a remembered header: got %v", err)
	}
	if n := env.calls.Load(); n != 1 {
		t.Fatalf("envelope Decrypt called %d times, want 1", n)
	}
}

// TestDecryptDoesNotRememberBadHeaders: a header that does not parse is
// refused alike every time, and takes no room.
func TestDecryptDoesNotRememberBadHeaders(t *testing.T) {
	s := sealed(t)
	s.Header = s.Header[:len(s.Header)-1]
	v2 := v2Service{Services: NewServices(&counting{}, nil, "test", slog.New(slog.DiscardHandler))}
	for range 2 {
		_, err := v2.Decrypt(context.Background(), decryptRequest(s))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), reasonInvalid) {
			t.Fatalf("truncated header: got %v", err)
		}
	}
	if _, ok := v2.keyIDs.get(s.Header); ok || v2.keyIDs.size != 0 {
		t.Fatalf("a header that does not parse was remembered (%d bytes held)", v2.keyIDs.size)
	}
}

// TestKeyIDsBounded: the memory of key_ids holds at most maxKeyIDBytes of
// headers; past that it starts over.
func TestKeyIDsBounded(t *testing.T) {
	var c keyIDs
	header := func(i int) []byte { return append(bytes.Repeat([]byte{'h'}, 1000), byte(i), byte(i>>8)) }
	for i := range 2 * maxKeyIDBytes / 1000 {
		c.add(header(i), "id")
		if c.size > maxKeyIDBytes {
			t.Fatalf("after %d headers, %d bytes held, over %d", i+1, c.size, maxKeyIDBytes)
		}
	}
	if _, ok := c.get(header(0)); ok {
		t.Fatal("the first header is still held after twice the bound")
	}
	if id, ok := c.get(header(2*maxKeyIDBytes/1000 - 1)); !ok || id != "id" {
		t.Fatal("the last header added is not held")
	}
}

// TestKeyIDsConcurrent: adds and reads from many goroutines at once (run
// with -race) neither race nor lose a key_id while under the bound.
func TestKeyIDsConcurrent(t *testing.T) {
	var c keyIDs
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				h := fmt.Appendf(nil, "header-%d-%d", g, i)
				c.add(h, string(h)+"-id")
				if id, ok := c.get(h); !ok || id != string(h)+"-id" {
					t.Errorf("%s: got %q, %v", h, id, ok)
				}
			}
		})
	}
	wg.Wait()
}
