package awskms

import (
	"context"
	"strings"
	"testing"
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
		{"endpoint with user", Config{KeyID: keyARN, Endpoint: "https://u:p@kms.example.com"}, "awskms.endpoint:"},
		{"role ARN not a role", Config{KeyID: keyARN, AssumeRoleARN: "arn:aws:iam::111122223333:user/bob"}, "awskms.assumeRoleARN:"},
		{"role ARN garbage", Config{KeyID: keyARN, AssumeRoleARN: "trousseau"}, "awskms.assumeRoleARN:"},
		{"context key reserved by Trousseau", Config{KeyID: keyARN, EncryptionContext: map[string]string{"Trousseau-aad": "x"}}, "awskms.encryptionContext:"},
		{"context key reserved by AWS", Config{KeyID: keyARN, EncryptionContext: map[string]string{"aws:x": "y"}}, "awskms.encryptionContext:"},
		{"empty context key", Config{KeyID: keyARN, EncryptionContext: map[string]string{"": "y"}}, "awskms.encryptionContext:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate accepted it, want an error naming %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("Validate: %v, want it to name %q", err, tc.wantErr)
			}
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
		{aliasARN, key1ARN, true},
		{aliasARN, key2ARN, true},
		{aliasARN, other, false},
		{aliasName, key2ARN, true},
		{aliasName, "arn:aws:kms:us-east-1:111122223333:key/" + key1ID, false},
		{key1ARN, "", false},
		{aliasName, aliasARN, false},
		{aliasName, "arn:aws:s3:" + testRegion + ":111122223333:key/" + key1ID, false},
	} {
		k, err := parseKeyRef(tc.keyID)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.owns(tc.keyARN, testRegion); got != tc.want {
			t.Errorf("keyID %q owns %q = %v, want %v", tc.keyID, tc.keyARN, got, tc.want)
		}
	}
}
