package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/config"
)

// Operator commands that talk to a running plugin over its socket, the
// way kube-apiserver does.

// dialTimeout bounds the operator commands' calls to a plugin.
const dialTimeout = 10 * time.Second

// withPlugin calls f with a client of the plugin at socket, under dialTimeout.
func withPlugin(ctx context.Context, socket string, f func(context.Context, kmsv2.KeyManagementServiceClient) error) error {
	// grpc reads "unix://relative/path" as an authority: make it absolute.
	abs, err := filepath.Abs(socket)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return f(ctx, kmsv2.NewKeyManagementServiceClient(conn))
}

func addSocketFlag(cmd *cobra.Command, socket *string) {
	cmd.Flags().StringVar(socket, "socket", config.DefaultSocket, "the plugin's socket")
}

// sealedMessage is what `encrypt` prints and `decrypt` reads: what
// kube-apiserver would store, as JSON (bytes in base64).
type sealedMessage struct {
	KeyID       string            `json:"keyID"`
	Ciphertext  []byte            `json:"ciphertext"`
	Annotations map[string][]byte `json:"annotations"`
}

// NewCmdEncrypt builds `trousseau encrypt`.
func NewCmdEncrypt(s streams) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "encrypt --socket PATH < plaintext > sealed.json",
		Short: "Encrypt stdin through a running plugin (at most 512 bytes: a DEK seed, not a file)",
		Long: `Encrypt stdin through the plugin's socket as kube-apiserver does, and
print what it would store as JSON (keyID, ciphertext and annotations in
base64), for 'trousseau decrypt'. A check of a running plugin, not a
tool for files: at most 512 bytes.

Exit status: 0 when the plugin encrypted, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pt, err := readAtMost(s.In, envelope.MaxPlaintextSize, "encrypt takes a DEK seed, as kube-apiserver sends, not a file")
			if err != nil {
				return err
			}
			return withPlugin(cmd.Context(), socket, func(ctx context.Context, c kmsv2.KeyManagementServiceClient) error {
				resp, err := c.Encrypt(ctx, &kmsv2.EncryptRequest{Plaintext: pt, Uid: "trousseau-cli"})
				if err != nil {
					return fmt.Errorf("encrypt: %w", err)
				}
				enc := json.NewEncoder(s.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(sealedMessage{KeyID: resp.KeyId, Ciphertext: resp.Ciphertext, Annotations: resp.Annotations})
			})
		},
	}
	addSocketFlag(cmd, &socket)
	return cmd
}

// NewCmdDecrypt builds `trousseau decrypt`.
func NewCmdDecrypt(s streams) *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "decrypt --socket PATH < sealed.json > plaintext",
		Short: "Decrypt what `trousseau encrypt` printed, through a running plugin",
		Long: `Decrypt the JSON 'trousseau encrypt' printed (on stdin) through the
plugin's socket, and write the plaintext.

Exit status: 0 when the plugin decrypted, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := readSealed(s.In)
			if err != nil {
				return err
			}
			return withPlugin(cmd.Context(), socket, func(ctx context.Context, c kmsv2.KeyManagementServiceClient) error {
				resp, err := c.Decrypt(ctx, &kmsv2.DecryptRequest{Ciphertext: m.Ciphertext, KeyId: m.KeyID, Annotations: m.Annotations, Uid: "trousseau-cli"})
				if err != nil {
					return fmt.Errorf("decrypt: %w", err)
				}
				_, err = s.Out.Write(resp.Plaintext)
				return err
			})
		},
	}
	addSocketFlag(cmd, &socket)
	return cmd
}

// maxSealedInput bounds what decrypt reads: what encrypt prints is a few
// KiB (annotations are at most 32 KiB before base64).
const maxSealedInput = 1 << 20

func readSealed(r io.Reader) (sealedMessage, error) {
	var m sealedMessage
	raw, err := readAtMost(r, maxSealedInput, "decrypt reads what `trousseau encrypt` printed, a few KiB")
	if err != nil {
		return m, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("read sealed JSON from stdin: %w", err)
	}
	return m, nil
}

// readAtMost reads r to its end and refuses more than limit bytes (saying
// why, with hint) rather than misread a cut input.
func readAtMost(r io.Reader, limit int64, hint string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("input is larger than %d bytes: %s", limit, hint)
	}
	return b, nil
}
