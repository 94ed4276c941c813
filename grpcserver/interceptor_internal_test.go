package grpcserver

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	kmsv2 "k8s.io/kms/apis/v2"
)

// TestRequestMetricsByCode: each request is counted and timed under its
// own method and code, a panic under Internal (counted outside the
// recovery interceptor).
func TestRequestMetricsByCode(t *testing.T) {
	m := NewMetrics()
	c := serveWithMetrics(t, panicky{}, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := decryptRequest(sealed(t))
	c.Decrypt(ctx, req) // panics
	req.KeyId = ""
	c.Decrypt(ctx, req)
	c.Decrypt(ctx, req)
	c.Status(ctx, &kmsv2.StatusRequest{})
	const decrypt, status = "/v2.KeyManagementService/Decrypt", "/v2.KeyManagementService/Status"
	for _, tc := range []struct {
		method, code string
		want         int
	}{{decrypt, "Internal", 1}, {decrypt, "InvalidArgument", 2}, {status, "OK", 1}, {decrypt, "OK", 0}} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(tc.method, tc.code)); int(got) != tc.want {
			t.Errorf("requests %s %s = %v, want %d", tc.method, tc.code, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.requestSeconds); n != 3 {
		t.Errorf("%d latency series, want 3 (one per method and code seen)", n)
	}
}
