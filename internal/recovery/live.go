package recovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// LiveEtcd reads a running etcd, the way etcdctl does: a consistent read
// at one revision, page by page.
type LiveEtcd struct {
	Endpoints []string
	// CACert, Cert and Key are PEM files, as etcdctl's --cacert, --cert
	// and --key; all empty means plain http.
	CACert, Cert, Key string
	// Username and Password, if etcd has authentication on.
	Username, Password string
	// DialTimeout bounds the connection (default 10s).
	DialTimeout time.Duration
	// PageSize is the number of keys per request (default 500).
	PageSize int64
}

// Scan implements Source.
func (l LiveEtcd) Scan(ctx context.Context, req ScanRequest) (*Scan, error) {
	cfg := clientv3.Config{
		Endpoints:   l.Endpoints,
		DialTimeout: l.DialTimeout,
		Username:    l.Username,
		Password:    l.Password,
		Logger:      zap.NewNop(),
		Context:     ctx,
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if l.CACert != "" || l.Cert != "" || l.Key != "" {
		info := transport.TLSInfo{CertFile: l.Cert, KeyFile: l.Key, TrustedCAFile: l.CACert}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", l.Endpoints, err)
	}
	defer cli.Close()
	out, err := scanLive(ctx, cli, req, l.PageSize, cfg.DialTimeout)
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", l.Endpoints, err)
	}
	out.Describe = fmt.Sprintf("etcd %s at revision %d", strings.Join(l.Endpoints, ","), out.Revision)
	return out, nil
}

// scanLive visits every key under req.Prefix at one revision (that of
// the first page), pageSize keys at a time. The first request must be
// answered within connect: the client waits for a connection rather
// than failing on a refused one.
func scanLive(ctx context.Context, cli *clientv3.Client, req ScanRequest, pageSize int64, connect time.Duration) (*Scan, error) {
	if pageSize <= 0 {
		pageSize = 500
	}
	prefix := normalizePrefix(req.Prefix)
	out := &Scan{}
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		resp, err := livePage(ctx, cli, from, end, pageSize, out.Revision, connect)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", prefix, err)
		}
		if out.Revision == 0 {
			out.Revision = resp.Header.Revision
			if req.Total != nil {
				req.Total(int(resp.Count))
			}
		}
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			if req.Keep != nil && !req.Keep(key) {
				continue
			}
			if err := req.Visit(KV{Key: key, Value: kv.Value, ModRevision: kv.ModRevision}); err != nil {
				return nil, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// livePage reads one page at rev (0: the first page, at the latest
// revision), under its own deadline: a stalled member fails the read
// instead of hanging it.
func livePage(ctx context.Context, cli *clientv3.Client, from, end string, limit, rev int64, connect time.Duration) (*clientv3.GetResponse, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}
	timeout := connect
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
		timeout = time.Minute
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.Get(pctx, from, opts...)
	if err != nil && rev == 0 && errors.Is(pctx.Err(), context.DeadlineExceeded) {
		return nil, fmt.Errorf("no answer within %s (unreachable, or TLS refused: check --cacert, --cert and --key): %w", timeout, err)
	}
	return resp, err
}
