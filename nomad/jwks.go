package nomad

import (
	"context"
	"fmt"
	"io"
)

// JWKSPath is where Nomad (1.7 and later) serves the public keys that verify
// the workload identities it signs; it asks for no token.
const JWKSPath = "/.well-known/jwks.json"

// MaxJWKS bounds the key set read: a set is a few KB (each RSA key under
// 1 KB, a handful of keys around a rotation); more is not Nomad's answer.
const MaxJWKS = 1 << 20

// ErrJWKSTooLarge is a key set larger than MaxJWKS.
var ErrJWKSTooLarge = fmt.Errorf("the key set is larger than %d KiB", MaxJWKS>>10)

// JWKS returns Nomad's key set as it was served (JWKSPath), at most MaxJWKS
// bytes. Its keys are the identity package's to parse and to trust; give ctx
// a deadline.
func (c *Client) JWKS(ctx context.Context) ([]byte, error) {
	body, err := c.api.Raw().Response(JWKSPath, Query(ctx, nil))
	if err != nil {
		return nil, fmt.Errorf("fetching Nomad's keys: %w", Err(err))
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, MaxJWKS+1))
	if err != nil {
		return nil, fmt.Errorf("reading Nomad's keys: %w", Err(err))
	}
	if len(b) > MaxJWKS {
		return nil, fmt.Errorf("reading Nomad's keys: %w", ErrJWKSTooLarge)
	}
	return b, nil
}
