package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/safetext"
	"github.com/trousseau-io/trousseau/kmsclients"
)

type decryptValueOptions struct {
	streams
	configFile string
	key        string
	input      string
	format     string
	prefix     string
	provider   string
}

// NewCmdDecryptValue builds `trousseau decrypt-value`.
func NewCmdDecryptValue(s streams) *cobra.Command {
	o := &decryptValueOptions{streams: s}
	cmd := &cobra.Command{
		Use:   "decrypt-value --config FILE --key ETCD_KEY < value",
		Short: "Decrypt one raw etcd value read from stdin (support cases)",
		Long: `Decrypt one value as stored in etcd, read from stdin, with the backends of
--config. --key is the value's etcd key (e.g. /registry/secrets/default/db):
kube-apiserver authenticates every value with its key, so it is needed.

--input raw (default) reads the bytes as 'etcdctl get KEY --print-value-only'
prints them (its trailing newline is tolerated); --input base64 reads them
base64-encoded; --input json reads 'etcdctl get KEY -w json', which carries
the key too.

-o yaml (default) or json writes the object as a Kubernetes manifest
(server-managed metadata removed); -o raw writes the decrypted bytes as
kube-apiserver stored them. Exit status: 0 when the value was decrypted,
1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.configFile, "config", "", "config file with the backends (the format of serve)")
	f.StringVar(&o.key, "key", "", "the value's etcd key")
	f.StringVar(&o.input, "input", "raw", "raw, base64, or json (etcdctl -w json)")
	addOutputFlag(cmd, &o.format, formatYAML, formatJSON, "raw")
	completeValues(cmd, "input", "raw", "base64", "json")
	f.StringVar(&o.prefix, "prefix", recovery.DefaultPrefix, "kube-apiserver's --etcd-prefix")
	f.StringVar(&o.provider, "provider-name", "", "KMS provider name; default: any")
	cmd.MarkFlagRequired("config")
	return cmd
}

// maxValueInput is far above etcd's largest request (1.5 MiB by default).
const maxValueInput = 64 << 20

func (o *decryptValueOptions) run(ctx context.Context) error {
	quietKubeLogs()
	switch o.format {
	case "raw", string(recovery.YAML), string(recovery.JSON):
	default:
		return fmt.Errorf("-o %q: want yaml, json or raw", o.format)
	}
	in, err := io.ReadAll(io.LimitReader(o.In, maxValueInput+1))
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	if len(in) > maxValueInput {
		return fmt.Errorf("stdin holds more than %d bytes: not one etcd value", maxValueInput)
	}
	key, values, err := o.parseInput(in)
	if err != nil {
		return safetext.Error(err)
	}
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return err
	}
	kr, err := recovery.OpenKeyring(ctx, cfg, kmsclients.DefaultCommandProbeTimeout)
	if err != nil {
		return err
	}
	defer kr.Close()
	var plain []byte
	var obj recovery.Object
	for _, v := range values {
		plain, obj, err = recovery.DecryptValue(ctx, kr, o.prefix, o.provider, key, v)
		if de := (*recovery.DEKError)(nil); err == nil || errors.As(err, &de) {
			break // a DEK that cannot be recovered will not be by another try
		}
	}
	if o.format == "raw" && plain != nil {
		_, werr := o.Out.Write(plain)
		return werr
	}
	if err != nil {
		return safetext.Error(err) // it names the key and quotes the backends
	}
	out, err := obj.Render(recovery.Format(o.format))
	if err != nil {
		return err
	}
	_, err = o.Out.Write(out)
	return err
}

// parseInput returns the key and the candidate values: a raw value that
// ends in a newline may be etcdctl's, or the value's own last byte.
func (o *decryptValueOptions) parseInput(in []byte) (string, [][]byte, error) {
	switch o.input {
	case "raw":
		if o.key == "" {
			return "", nil, errors.New("--key ETCD_KEY is required: the key authenticates the value")
		}
		values := [][]byte{in}
		if t, ok := bytes.CutSuffix(in, []byte("\n")); ok {
			values = append(values, t)
		}
		return o.key, values, nil
	case "base64":
		if o.key == "" {
			return "", nil, errors.New("--key ETCD_KEY is required: the key authenticates the value")
		}
		v, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(in)))
		if err != nil {
			return "", nil, fmt.Errorf("stdin is not base64: %w", err)
		}
		return o.key, [][]byte{v}, nil
	case "json":
		var resp struct {
			Kvs []struct {
				Key, Value []byte
			} `json:"kvs"`
		}
		if err := json.Unmarshal(in, &resp); err != nil {
			return "", nil, fmt.Errorf("stdin is not the output of etcdctl get -w json: %w", err)
		}
		if len(resp.Kvs) != 1 {
			return "", nil, fmt.Errorf("etcdctl JSON holds %d keys, want exactly 1", len(resp.Kvs))
		}
		key := string(resp.Kvs[0].Key)
		if o.key != "" && o.key != key {
			return "", nil, fmt.Errorf("--key %s differs from the key in the JSON, %s", o.key, key)
		}
		return key, [][]byte{resp.Kvs[0].Value}, nil
	}
	return "", nil, fmt.Errorf("--input %q: want raw, base64 or json", o.input)
}
