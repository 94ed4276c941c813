package awskms

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/arn"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

func TestConfigValidate(t *testing.T) {
	const keyARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"key ARN", Config{KeyID: keyARN}, ""},
		{"key ARN other partition", Config{KeyID: "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}, ""},
		{"multi-region key ARN", Config{KeyID: "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"}, ""},
		{"key ID", Config{KeyID: "1234abcd-12ab-34cd-56ef-1234567890ab", Region: "us-east-1"}, ""},
		{"alias name", Config{KeyID: "alias/trousseau"}, ""},
		{"alias ARN", Config{KeyID: "arn:aws:kms:us-east-1:111122223333:alias/trousseau"}, ""},
		{"everything", Config{KeyID: keyARN, Region: "us-east-1", Endpoint: "https://vpce-0123.kms.us-east-1.vpce.amazonaws.com", Profile: "prod",
			AssumeRoleARN: "arn:aws:iam::111122223333:role/trousseau", EncryptionContext: map[string]string{"cluster": "prod"}}, ""},
		{"loopback http endpoint", Config{KeyID: keyARN, Endpoint: "http://127.0.0.1:4599"}, ""},
		{"localhost http endpoint", Config{KeyID: keyARN, Endpoint: "http://localhost:4599"}, ""},
		{"FIPS endpoint", Config{KeyID: keyARN, UseFIPSEndpoint: true}, ""},

		{"missing keyID", Config{}, "awskms.keyID: required"},
		{"garbage keyID", Config{KeyID: "my key"}, "awskms.keyID:"},
		{"non-KMS ARN", Config{KeyID: "arn:aws:s3:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}, "awskms.keyID:"},
		{"ARN without region", Config{KeyID: "arn:aws:kms::111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}, "awskms.keyID:"},
		{"ARN of another resource", Config{KeyID: "arn:aws:kms:us-east-1:111122223333:grant/abc"}, "awskms.keyID:"},
		{"malformed key id in ARN", Config{KeyID: "arn:aws:kms:us-east-1:111122223333:key/nope"}, "awskms.keyID:"},
		{"bad region", Config{KeyID: keyARN, Region: "US East"}, "awskms.region:"},
		{"region differs from ARN", Config{KeyID: keyARN, Region: "eu-west-1"}, "awskms.region:"},
		{"remote http endpoint", Config{KeyID: keyARN, Endpoint: "http://kms.example.com"}, "awskms.endpoint:"},
		{"relative endpoint", Config{KeyID: keyARN, Endpoint: "kms.example.com"}, "awskms.endpoint:"},
		{"FIPS endpoint and endpoint", Config{KeyID: keyARN, UseFIPSEndpoint: true, Endpoint: "https://vpce-0123.kms.us-east-1.vpce.amazonaws.com"}, "awskms.useFIPSEndpoint: cannot be combined with awskms.endpoint"},
		{"endpoint with user", Config{KeyID: keyARN, Endpoint: "https://u:p@kms.example.com"}, "awskms.endpoint:"},
		{"role ARN not a role", Config{KeyID: keyARN, AssumeRoleARN: "arn:aws:iam::111122223333:user/bob"}, "awskms.assumeRoleARN:"},
		{"role ARN garbage", Config{KeyID: keyARN, AssumeRoleARN: "trousseau"}, "awskms.assumeRoleARN:"},
		{"context key reserved by Trousseau", Config{KeyID: keyARN, EncryptionContext: map[string]string{"Trousseau-aad": "x"}}, "awskms.encryptionContext:"},
		{"context key reserved by AWS", Config{KeyID: keyARN, EncryptionContext: map[string]string{"aws:x": "y"}}, "awskms.encryptionContext:"},
		{"empty context key", Config{KeyID: keyARN, EncryptionContext: map[string]string{"": "y"}}, "awskms.encryptionContext:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kmstest.WantError(t, "Validate", tc.cfg.Validate(), tc.wantErr)
		})
	}
}

func TestConfigRegion(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{KeyID: "arn:aws:kms:ap-south-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}, "ap-south-1"},
		{Config{KeyID: "arn:aws:kms:ap-south-1:111122223333:alias/a"}, "ap-south-1"},
		{Config{KeyID: "alias/a", Region: "us-west-2"}, "us-west-2"},
		{Config{KeyID: "alias/a"}, ""},
	} {
		if got := tc.cfg.region(); got != tc.want {
			t.Errorf("region of %+v = %q, want %q", tc.cfg, got, tc.want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	ctx := context.Background()
	if _, err := newBackend(ctx, "Bad_Name", Config{KeyID: key1ARN}, testLoadOptions()...); err == nil {
		t.Error("New accepted an invalid backend name")
	}
	_, err := newBackend(ctx, "aws", Config{}, testLoadOptions()...)
	if err == nil || !strings.HasPrefix(err.Error(), "awskms aws: awskms.keyID") {
		t.Errorf("New with no keyID: %v", err)
	}
}

func TestKeyRefOwns(t *testing.T) {
	const other = "arn:aws:kms:eu-west-2:999999999999:key/" + key1ID
	home := keyHome{partition: "aws", region: testRegion, account: testAccount}
	for _, tc := range []struct {
		keyID  string
		keyARN string
		want   bool
	}{
		{key1ARN, key1ARN, true},
		{key1ARN, key2ARN, false},
		{key1ID, key1ARN, true},
		{key1ID, key2ARN, false},
		{key1ID, "arn:aws:kms:us-east-1:111122223333:key/" + key1ID, false},
		{key1ID, other, false},
		{aliasARN, key1ARN, true},
		{aliasARN, key2ARN, true},
		{aliasARN, other, false},
		{aliasName, key2ARN, true},
		{aliasName, "arn:aws:kms:us-east-1:111122223333:key/" + key1ID, false},
		{aliasName, other, false},
		{aliasName, "arn:aws-cn:kms:" + testRegion + ":111122223333:key/" + key1ID, false},
		{key1ARN, "", false},
		{aliasName, aliasARN, false},
		{aliasName, "arn:aws:s3:" + testRegion + ":111122223333:key/" + key1ID, false},
	} {
		k, err := parseKeyRef(tc.keyID)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.owns(tc.keyARN, home); got != tc.want {
			t.Errorf("keyID %q owns %q = %v, want %v", tc.keyID, tc.keyARN, got, tc.want)
		}
	}
}

func TestKeyRefHome(t *testing.T) {
	for keyID, want := range map[string]bool{key1ARN: true, aliasARN: true, key1ID: false, aliasName: false} {
		k, err := parseKeyRef(keyID)
		if err != nil {
			t.Fatal(err)
		}
		h, ok := k.home()
		if ok != want || ok && h != (keyHome{partition: "aws", region: testRegion, account: testAccount}) {
			t.Errorf("home of %q = %+v, %v", keyID, h, ok)
		}
	}
}

func TestCustodianKey(t *testing.T) {
	const mrk = "mrk-1234abcd12ab34cd56ef1234567890ab"
	b := &Backend{}
	for id, want := range map[string]string{
		"arn:aws:kms:eu-west-1:111122223333:key/" + mrk:            "awskms:aws:111122223333:" + mrk,
		"arn:aws:kms:us-east-1:111122223333:key/" + mrk:            "awskms:aws:111122223333:" + mrk,
		"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/" + mrk: "awskms:aws-us-gov:111122223333:" + mrk,
		"arn:aws:kms:eu-west-1:999999999999:key/" + mrk:            "awskms:aws:999999999999:" + mrk,
		key1ARN: key1ARN,
		"arn:aws:kms:eu-west-1:111122223333:alias/" + mrk:   "arn:aws:kms:eu-west-1:111122223333:alias/" + mrk,
		"arn:aws:kms:eu-west-1:111122223333:key/mrk-nothex": "arn:aws:kms:eu-west-1:111122223333:key/mrk-nothex",
		"arn:aws:s3:eu-west-1:111122223333:key/" + mrk:      "arn:aws:s3:eu-west-1:111122223333:key/" + mrk,
		"vault:https://127.0.0.1:8200/transit/k:v1":         "vault:https://127.0.0.1:8200/transit/k:v1",
		"": "",
	} {
		if got := b.CustodianKey(id); got != want {
			t.Errorf("CustodianKey(%q) = %q, want %q", id, got, want)
		}
	}
	if kmsclients.CustodianKey(b, "arn:aws:kms:eu-west-1:111122223333:key/"+mrk) != kmsclients.CustodianKey(b, "arn:aws:kms:ap-south-1:111122223333:key/"+mrk) {
		t.Error("a multi-Region key and its replica are two custodians")
	}
	if kmsclients.CustodianKey(b, key1ARN) == kmsclients.CustodianKey(b, key2ARN) {
		t.Error("two single-Region keys are one custodian")
	}
}

// FuzzOwns: a share's key identity is untrusted (etcd); whatever it is, it
// is owned only if it is a key ARN in the configured key's home.
func FuzzOwns(f *testing.F) {
	f.Add(key1ARN)
	f.Add("arn:aws:kms:eu-west-2:999999999999:key/" + key1ID)
	f.Add("arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab")
	home := keyHome{partition: "aws", region: testRegion, account: testAccount}
	refs := make([]keyRef, 0, 4)
	for _, keyID := range []string{key1ARN, key1ID, aliasARN, aliasName} {
		k, err := parseKeyRef(keyID)
		if err != nil {
			f.Fatal(err)
		}
		refs = append(refs, k)
	}
	f.Fuzz(func(t *testing.T, keyARN string) {
		for _, k := range refs {
			if !k.owns(keyARN, home) {
				continue
			}
			a, err := arn.Parse(keyARN)
			if err != nil || a.Service != "kms" || (keyHome{a.Partition, a.Region, a.AccountID}) != home {
				t.Fatalf("keyID %q owns %q, outside its home", k.raw, keyARN)
			}
		}
		if c := custodianKey(keyARN); c != keyARN && !strings.HasPrefix(c, "awskms:") {
			t.Fatalf("custodianKey(%q) = %q", keyARN, c)
		}
	})
}

// dialRecorder is a transport that dials nothing: it keeps the address
// the SDK would have connected to, so no call leaves the machine.
type dialRecorder struct{ addrs []string }

func (d *dialRecorder) client() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.DialContext = func(_ context.Context, _, addr string) (net.Conn, error) {
			d.addrs = append(d.addrs, addr)
			return nil, errors.New("not dialled: recorded by the test")
		}
	})
}

func TestUseFIPSEndpointReachesTheFIPSHost(t *testing.T) {
	for _, tc := range []struct {
		fips bool
		want string
	}{{false, "kms.us-east-1.amazonaws.com:443"}, {true, "kms-fips.us-east-1.amazonaws.com:443"}} {
		rec := &dialRecorder{}
		cfg := Config{KeyID: "alias/trousseau", Region: "us-east-1", UseFIPSEndpoint: tc.fips}
		b, err := newBackend(context.Background(), "aws", cfg, append(testLoadOptions(), config.WithHTTPClient(rec.client()))...)
		if err != nil {
			t.Fatal(err)
		}
		b.Probe(context.Background())
		if len(rec.addrs) == 0 || rec.addrs[0] != tc.want {
			t.Errorf("useFIPSEndpoint %v: calls went to %v, want %s", tc.fips, rec.addrs, tc.want)
		}
	}
}
