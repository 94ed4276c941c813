package awskms

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/arn"
)

// Config is the YAML block `awskms: {...}` of a backend.
type Config struct {
	// KeyID names the KMS key: a key ARN (preferred), a key ID, an alias
	// ARN or "alias/<name>". With an alias the key identity follows the
	// alias, so repointing it rotates the DEK.
	KeyID string `json:"keyID"`
	// Region defaults to the region of an ARN KeyID, else to the SDK's
	// chain (AWS_REGION, the shared config file).
	Region string `json:"region,omitempty"`
	// Endpoint overrides the KMS endpoint: a VPC interface endpoint, or a
	// local emulator (plain http is accepted only on loopback).
	Endpoint string `json:"endpoint,omitempty"`
	// UseFIPSEndpoint sends every call (KMS, STS) to the region's FIPS
	// endpoint. With Endpoint, use a FIPS VPC endpoint instead.
	UseFIPSEndpoint bool `json:"useFIPSEndpoint,omitempty"`
	// Profile selects a profile of the shared config files.
	Profile string `json:"profile,omitempty"`
	// AssumeRoleARN is a role assumed, with the default chain's
	// credentials, for every KMS call.
	AssumeRoleARN string `json:"assumeRoleARN,omitempty"`
	// EncryptionContext is added to every Encrypt and Decrypt. It is logged
	// in CloudTrail in the clear, and IAM conditions can match it.
	EncryptionContext map[string]string `json:"encryptionContext,omitempty"`
}

// Validate names the field at fault.
func (c Config) Validate() error {
	key, err := parseKeyRef(c.KeyID)
	if err != nil {
		return fmt.Errorf("awskms.keyID: %w", err)
	}
	if err := validateRegion(c.Region, key); err != nil {
		return fmt.Errorf("awskms.region: %w", err)
	}
	if err := validateEndpoint(c.Endpoint); err != nil {
		return fmt.Errorf("awskms.endpoint: %w", err)
	}
	if c.UseFIPSEndpoint && c.Endpoint != "" {
		return errors.New("awskms.useFIPSEndpoint: cannot be combined with awskms.endpoint (the SDK refuses both); to reach a FIPS VPC endpoint, set awskms.endpoint to it and leave useFIPSEndpoint out")
	}
	if err := validateRoleARN(c.AssumeRoleARN); err != nil {
		return fmt.Errorf("awskms.assumeRoleARN: %w", err)
	}
	if err := validateContext(c.EncryptionContext); err != nil {
		return fmt.Errorf("awskms.encryptionContext: %w", err)
	}
	return nil
}

// FIPSWarning is what a FIPS 140-3 deployment should know of c, "" for
// nothing: calls to the standard endpoint leave the FIPS boundary.
func (c Config) FIPSWarning() string {
	if c.UseFIPSEndpoint || c.Endpoint != "" {
		return ""
	}
	return "awskms calls the standard KMS endpoint, not the FIPS one: set awskms.useFIPSEndpoint: true where the region has one"
}

// region is the region the client talks to, or "" to leave it to the SDK.
func (c Config) region() string {
	if c.Region != "" {
		return c.Region
	}
	key, err := parseKeyRef(c.KeyID)
	if err != nil || key.arn == nil {
		return ""
	}
	return key.arn.Region
}

var (
	regionRE    = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)+$`)
	keyIDRE     = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	aliasNameRE = regexp.MustCompile(`^alias/[A-Za-z0-9/_-]{1,250}$`)
)

func validateRegion(region string, key keyRef) error {
	if region == "" {
		return nil
	}
	if !regionRE.MatchString(region) {
		return fmt.Errorf("%q is not a region name", region)
	}
	// A client in another region than the key's would only ever answer
	// "not found"; say so now rather than at the first probe.
	if key.arn != nil && key.arn.Region != region {
		return fmt.Errorf("%q differs from the region of keyID (%s)", region, key.arn.Region)
	}
	return nil
}

// validateEndpoint refuses plain http except on loopback: Encrypt sends
// the share itself, which must never cross a network in the clear.
func validateEndpoint(endpoint string) error {
	if endpoint == "" {
		return nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || u.User != nil {
		return fmt.Errorf("%q is not an absolute http(s) URL", endpoint)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q: plain http is allowed only on loopback (a local emulator); use https", endpoint)
	default:
		return fmt.Errorf("%q: scheme must be https", endpoint)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validateRoleARN(role string) error {
	if role == "" {
		return nil
	}
	a, err := arn.Parse(role)
	if err != nil || a.Service != "iam" || a.AccountID == "" || !strings.HasPrefix(a.Resource, "role/") {
		return fmt.Errorf("%q is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", role)
	}
	return nil
}

// Context keys that Trousseau sets itself on every call.
const (
	ctxKeyTrousseau = "trousseau"
	ctxKeyAAD       = "trousseau-aad"
	ctxValueShare   = "share"
)

func validateContext(ec map[string]string) error {
	for k := range ec {
		lower := strings.ToLower(k)
		switch {
		case k == "":
			return errors.New("empty key")
		case strings.HasPrefix(lower, "trousseau"):
			return fmt.Errorf("key %q: keys starting with \"trousseau\" are reserved for the entries Trousseau adds", k)
		case strings.HasPrefix(lower, "aws:"):
			return fmt.Errorf("key %q: the \"aws:\" prefix is reserved by AWS", k)
		}
	}
	return nil
}

// keyRef is a parsed Config.KeyID.
type keyRef struct {
	raw string
	// arn is set when raw is a key or alias ARN.
	arn *arn.ARN
	// alias is true for an alias name or alias ARN.
	alias bool
}

func parseKeyRef(s string) (keyRef, error) {
	switch {
	case s == "":
		return keyRef{}, errors.New("required")
	case keyIDRE.MatchString(s):
		return keyRef{raw: s}, nil
	case aliasNameRE.MatchString(s):
		return keyRef{raw: s, alias: true}, nil
	case !arn.IsARN(s):
		return keyRef{}, fmt.Errorf("%q: want a key ARN, a key ID, an alias ARN or alias/<name>", s)
	}
	a, err := arn.Parse(s)
	if err != nil || a.Service != "kms" || a.Region == "" || a.AccountID == "" {
		return keyRef{}, fmt.Errorf("%q is not a KMS key or alias ARN", s)
	}
	id, isKey := strings.CutPrefix(a.Resource, "key/")
	switch {
	case isKey && keyIDRE.MatchString(id):
		return keyRef{raw: s, arn: &a}, nil
	case aliasNameRE.MatchString(a.Resource):
		return keyRef{raw: s, arn: &a, alias: true}, nil
	}
	return keyRef{}, fmt.Errorf("%q: resource must be key/<key-id> or alias/<name>", s)
}

// keyHome is where a key lives: its partition, region and account.
type keyHome struct{ partition, region, account string }

// home is where keyID's key lives, when it is an ARN; other forms are
// resolved by KMS in the caller's account.
func (k keyRef) home() (keyHome, bool) {
	if k.arn == nil {
		return keyHome{}, false
	}
	return keyHome{partition: k.arn.Partition, region: k.arn.Region, account: k.arn.AccountID}, true
}

// owns reports whether this backend may use keyARN. A key owns only
// itself; an alias any key of home, as shares wrapped before a repoint
// must unwrap. Never another account's or region's: an etcd writer could
// name a key of their own that the role may use.
func (k keyRef) owns(keyARN string, home keyHome) bool {
	a, err := arn.Parse(keyARN)
	if err != nil || a.Service != "kms" || !strings.HasPrefix(a.Resource, "key/") {
		return false
	}
	if (keyHome{partition: a.Partition, region: a.Region, account: a.AccountID}) != home {
		return false
	}
	switch {
	case k.alias:
		return true
	case k.arn != nil:
		return keyARN == k.raw
	default:
		return a.Resource == "key/"+k.raw
	}
}

// custodianKey names the key material: a multi-Region key (mrk-...) and
// its replicas without the region; anything else names itself.
func custodianKey(keyARN string) string {
	a, err := arn.Parse(keyARN)
	if err != nil || a.Service != "kms" {
		return keyARN
	}
	id, ok := strings.CutPrefix(a.Resource, "key/")
	if !ok || !strings.HasPrefix(id, "mrk-") || !keyIDRE.MatchString(id) {
		return keyARN
	}
	return "awskms:" + a.Partition + ":" + a.AccountID + ":" + id
}
