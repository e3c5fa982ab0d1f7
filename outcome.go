package keyward

// Outcome is the result of one verification (PRODUCT §4). Checks run in the
// order of the constants below, from Malformed on, and the first failure is
// the outcome.
type Outcome uint8

// Outcomes, in the order their checks run.
const (
	Valid Outcome = iota
	Malformed
	NotFound
	Revoked
	Suspended
	PendingApproval
	Expired
	IPNotAllowed
	InsufficientScope
	RateLimited
	QuotaExceeded
	numOutcomes
)

// NumOutcomes is the number of outcomes, for arrays indexed by Outcome.
const NumOutcomes = int(numOutcomes)

var outcomeNames = [...]string{
	Valid:             "VALID",
	Malformed:         "MALFORMED",
	NotFound:          "NOT_FOUND",
	Revoked:           "REVOKED",
	Suspended:         "SUSPENDED",
	PendingApproval:   "PENDING_APPROVAL",
	Expired:           "EXPIRED",
	IPNotAllowed:      "IP_NOT_ALLOWED",
	InsufficientScope: "INSUFFICIENT_SCOPE",
	RateLimited:       "RATE_LIMITED",
	QuotaExceeded:     "QUOTA_EXCEEDED",
}

// String returns the outcome code as the API writes it, such as "VALID".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "UNKNOWN"
}

// Identified reports whether the token was found, so that a response may
// describe it: every outcome from Revoked on.
func (o Outcome) Identified() bool {
	return o == Valid || o >= Revoked
}

// ParseOutcome returns the outcome with the given code, such as "VALID".
func ParseOutcome(code string) (Outcome, bool) {
	for i, name := range outcomeNames {
		if name == code {
			return Outcome(i), true
		}
	}
	return 0, false
}
