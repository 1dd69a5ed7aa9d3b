package identity

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// ErrNoToken is a request that presented no token.
var ErrNoToken = errors.New("no workload identity presented")

// Reason is why a token was refused.
type Reason string

// The reasons a token is refused.
const (
	ReasonTooLarge    Reason = "larger than a workload identity"
	ReasonMalformed   Reason = "not a signed JWT"
	ReasonAlgorithm   Reason = "signature algorithm not allowed"
	ReasonUnknownKey  Reason = "signed by a key Nomad does not serve"
	ReasonSignature   Reason = "signature does not verify"
	ReasonAudience    Reason = "audience not ours"
	ReasonNamespace   Reason = "another namespace"
	ReasonJob         Reason = "another job"
	ReasonIssuer      Reason = "another issuer"
	ReasonExpired     Reason = "expired"
	ReasonNotYetValid Reason = "not valid yet"
	ReasonNoExpiry    Reason = "no expiry"
)

// RefusedError is a token that was presented and refused. Neither Reason
// nor Detail holds the token; Detail may quote a claim (cut short).
type RefusedError struct {
	Reason Reason
	Detail string
}

func (e *RefusedError) Error() string {
	if e.Detail == "" {
		return "workload identity refused: " + string(e.Reason)
	}
	return "workload identity refused: " + string(e.Reason) + ": " + e.Detail
}

func refused(r Reason, format string, args ...any) *RefusedError {
	return &RefusedError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// UnavailableError is a token that could not be checked: Nomad's keys could
// not be had, and none were had before, or Nomad could not say whether the
// token's allocation runs (What says which).
type UnavailableError struct {
	What string // what could not be had; "" is "Nomad's keys are unavailable"
	Err  error
}

func (e *UnavailableError) Error() string {
	what := e.What
	if what == "" {
		what = "Nomad's keys are unavailable"
	}
	return "checking the workload identity: " + what + ": " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// quote is s quoted for a Detail, cut to 64 bytes: a claim is the sender's
// text.
func quote(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}
