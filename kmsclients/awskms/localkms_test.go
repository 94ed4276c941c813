package awskms

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// The world every emulator the tests start holds (see testutil).
const (
	testAccount = testutil.AWSAccount
	testRegion  = testutil.AWSRegion
	key1ID      = testutil.AWSKey1ID
	key2ID      = testutil.AWSKey2ID
	aliasName   = testutil.AWSAlias
	key1ARN     = testutil.AWSKey1ARN
	key2ARN     = testutil.AWSKey2ARN
	aliasARN    = testutil.AWSAliasARN
	arnPrefix   = "arn:aws:kms:" + testRegion + ":" + testAccount + ":"
)

// startLocalKMS starts an emulator on a free port with a fresh data
// directory, seeded with two keys and an alias to the first.
func startLocalKMS(t testing.TB) *testutil.Emulator { return testutil.StartLocalKMS(t) }

// testLoadOptions keep the tests off the machine's AWS configuration:
// dummy static credentials, no shared files.
func testLoadOptions() []func(*config.LoadOptions) error {
	return []func(*config.LoadOptions) error{
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTROUSSEAUTEST", "not-a-secret", "")),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	}
}

// newTestBackend returns a backend on endpoint; cfg.Endpoint is set here.
func newTestBackend(t testing.TB, name, endpoint string, cfg Config) *Backend {
	t.Helper()
	cfg.Endpoint = endpoint
	b, err := newBackend(context.Background(), name, cfg, testLoadOptions()...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// adminClient is a plain KMS client for the tests' own calls (DisableKey).
func adminClient(t testing.TB, endpoint string) *kms.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		append(testLoadOptions(), config.WithRegion(testRegion))...)
	if err != nil {
		t.Fatal(err)
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(endpoint) })
}
