package gcpkms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/auth/credentials/impersonate"
	"cloud.google.com/go/auth/httptransport"
	"cloud.google.com/go/compute/metadata"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// OAuth scopes: the base credentials may need to call the IAM
// Credentials API (impersonation); the tokens sent to Cloud KMS need
// Cloud KMS only.
const (
	scopeCloudPlatform = "https://www.googleapis.com/auth/cloud-platform"
	scopeCloudKMS      = "https://www.googleapis.com/auth/cloudkms"
)

// reconnect shortens gRPC's reconnect backoff (120 s by default), so the
// backend is back within seconds after an outage.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
	MinConnectTimeout: 10 * time.Second,
}

// quiet is the Google libraries' logger: their debug level
// (GOOGLE_SDK_GO_LOGGING_LEVEL) would log shares and tokens.
var quiet = slog.New(slog.DiscardHandler)

// clientOptions builds the client's options for a valid cfg, without a
// remote call.
func clientOptions(cfg Config) ([]option.ClientOption, error) {
	opts := []option.ClientOption{
		option.WithLogger(quiet),
		option.WithUserAgent("trousseau"),
		option.WithGRPCDialOption(grpc.WithConnectParams(reconnect)),
	}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint))
	}
	if cfg.plaintext() {
		return append(opts,
			option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		), nil
	}
	creds, err := newCredentials(cfg)
	if err != nil {
		return nil, err
	}
	return append(opts, option.WithAuthCredentials(creds)), nil
}

// newCredentials builds the credentials cfg selects. The file is read
// now, so a bad one is reported at start; the rest waits for the first
// call.
func newCredentials(cfg Config) (*auth.Credentials, error) {
	var creds *auth.Credentials
	if cfg.CredentialsFile == "" {
		creds = auth.NewCredentials(&auth.CredentialsOptions{TokenProvider: newDefaultCredentials()})
	} else {
		var err error
		if creds, err = fileCredentials(cfg.CredentialsFile); err != nil {
			return nil, err
		}
	}
	if sa := cfg.ImpersonateServiceAccount; sa != "" {
		// What impersonate would build itself, on a transport tests can
		// fake.
		iam, err := httptransport.NewClient(&httptransport.Options{
			Credentials:      creds,
			Logger:           quiet,
			BaseRoundTripper: iamAnswers{iamTransport},
			InternalOptions:  &httptransport.InternalOptions{SkipUniverseDomainValidation: true},
		})
		if err != nil {
			return nil, fmt.Errorf("gcpkms.impersonateServiceAccount: %w", err)
		}
		creds, err = impersonate.NewCredentials(&impersonate.CredentialsOptions{
			TargetPrincipal: sa,
			Scopes:          []string{scopeCloudKMS},
			Credentials:     creds,
			Client:          iam,
			Logger:          quiet,
		})
		if err != nil {
			return nil, fmt.Errorf("gcpkms.impersonateServiceAccount: %w", err)
		}
	}
	return marked(creds), nil
}

// iamTransport carries the calls to the IAM Credentials API; nil is
// net/http's default transport. Only tests set it.
var iamTransport http.RoundTripper

// iamAnswers marks an IAM answer of 429 or 5xx iamUnavailable:
// impersonate reports failures as text alone, and an outage is no
// refusal.
type iamAnswers struct{ base http.RoundTripper }

func (t iamAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) {
		resp.Body.Close()
		return nil, iamUnavailable(resp.StatusCode)
	}
	return resp, err
}

// iamUnavailable is the HTTP status of an IAM Credentials API outage.
type iamUnavailable int

func (c iamUnavailable) Error() string {
	return fmt.Sprintf("IAM Credentials API answered %d %s", int(c), http.StatusText(int(c)))
}

// fileTypes are the credential files accepted (user login is for
// development).
var fileTypes = map[credentials.CredType]bool{
	credentials.ServiceAccount:                true,
	credentials.ExternalAccount:               true,
	credentials.ImpersonatedServiceAccount:    true,
	credentials.AuthorizedUser:                true,
	credentials.ExternalAccountAuthorizedUser: true,
}

// maxCredentialsFile bounds what is read from a credentials file.
const maxCredentialsFile = 1 << 20

// fileCredentials reads a credentials file. Its errors name the field
// and the path, never the content.
func fileCredentials(path string) (*auth.Credentials, error) {
	const field = "gcpkms.credentialsFile"
	data, err := readBounded(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	defer clear(data)
	var head struct {
		Type credentials.CredType `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%s: %s is not a JSON credentials file", field, path)
	}
	if !fileTypes[head.Type] {
		return nil, fmt.Errorf("%s: %s has type %q; want service_account, external_account, impersonated_service_account, authorized_user or external_account_authorized_user", field, path, head.Type)
	}
	creds, err := credentials.NewCredentialsFromJSON(head.Type, data, &credentials.DetectOptions{Scopes: []string{scopeCloudPlatform}, Logger: quiet})
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %s", field, path, oneLine(err.Error()))
	}
	return creds, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialsFile+1))
	switch {
	case err != nil:
		return nil, err
	case len(data) > maxCredentialsFile:
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxCredentialsFile)
	case len(bytes.TrimSpace(data)) == 0:
		return nil, fmt.Errorf("%s is empty", path)
	}
	return data, nil
}

// defaultCredentials are looked for at the first call, not at New: the
// metadata server may not answer yet at start. A failed search is
// retried at the next call.
type defaultCredentials struct {
	detect func() (*auth.Credentials, error)

	mu      sync.Mutex
	creds   *auth.Credentials
	err     error         // of the last search
	pending chan struct{} // closed when the search under way ends
}

func newDefaultCredentials() *defaultCredentials {
	return &defaultCredentials{detect: func() (*auth.Credentials, error) {
		return credentials.DetectDefault(&credentials.DetectOptions{Scopes: []string{scopeCloudPlatform}, Logger: quiet})
	}}
}

// Token implements auth.TokenProvider.
func (d *defaultCredentials) Token(ctx context.Context) (*auth.Token, error) {
	creds, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	return creds.Token(ctx)
}

// get returns the credentials, searching if needed; the caller waits no
// longer than ctx (the search goes on for the next one).
func (d *defaultCredentials) get(ctx context.Context) (*auth.Credentials, error) {
	d.mu.Lock()
	if d.creds != nil {
		defer d.mu.Unlock()
		return d.creds, nil
	}
	if d.pending == nil {
		done := make(chan struct{})
		d.pending = done
		go func() {
			creds, err := d.detect()
			d.mu.Lock()
			d.creds, d.err, d.pending = creds, err, nil
			d.mu.Unlock()
			close(done)
		}()
	}
	done := d.pending
	d.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.creds != nil {
		return d.creds, nil
	}
	return nil, fmt.Errorf("Application Default Credentials: %w", d.err)
}

// marked makes token errors gRPC statuses of their kind; otherwise gRPC
// reports a silent metadata server as Unauthenticated.
func marked(creds *auth.Credentials) *auth.Credentials {
	return auth.NewCredentials(&auth.CredentialsOptions{
		TokenProvider:          markedTokens{creds},
		JSON:                   creds.JSON(),
		QuotaProjectIDProvider: auth.CredentialsPropertyFunc(creds.QuotaProjectID),
		UniverseDomainProvider: auth.CredentialsPropertyFunc(creds.UniverseDomain),
	})
}

type markedTokens struct{ creds *auth.Credentials }

func (m markedTokens) Token(ctx context.Context) (*auth.Token, error) {
	tok, err := m.creds.Token(ctx)
	if err != nil {
		return nil, tokenError(err)
	}
	return tok, nil
}

// tokenError sorts a token failure (Unavailable or Unauthenticated) in
// one line that never holds a token.
func tokenError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	code := codes.Unauthenticated
	if transientTokenError(err) {
		code = codes.Unavailable
	}
	return status.Error(code, tokenErrorText+oneLine(err.Error()))
}

// tokenErrorText starts the message of a token error.
const tokenErrorText = "getting a Google access token: "

func transientTokenError(err error) bool {
	var authErr *auth.Error
	var mdErr *metadata.Error
	var netErr net.Error
	var iamErr iamUnavailable
	switch {
	case errors.As(err, &iamErr):
		return true
	case errors.As(err, &authErr):
		return authErr.Temporary()
	case errors.As(err, &mdErr):
		return mdErr.Code == http.StatusTooManyRequests || mdErr.Code >= 500
	case errors.As(err, &netErr):
		return true
	}
	return false
}
