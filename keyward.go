// Package keyward holds the domain of the keyward API token platform: tokens,
// workspaces, scopes, audit events, the error vocabulary and the store
// contract. It imports no adapter; stores, the HTTP API and the CLI import it.
package keyward

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to exactly one HTTP status in the API package.
const (
	EINVALID      = "invalid"      // the request is malformed or fails validation
	ENOTFOUND     = "not_found"    // the object does not exist in the caller's workspace
	ECONFLICT     = "conflict"     // the object's state forbids the operation
	EUNAUTHORIZED = "unauthorized" // no or an invalid credential
	EFORBIDDEN    = "forbidden"    // a valid credential without the needed scope
	ETOOLARGE     = "too_large"    // the request body exceeds the limit
	ERATELIMITED  = "rate_limited" // the caller exceeded a limit
	EUNAVAILABLE  = "unavailable"  // a dependency is down; try again later
	EINTERNAL     = "internal"     // a bug or an unexpected failure
)

// FieldError names one invalid field of a request by its JSON pointer
// (RFC 6901), for example "/rate_limit/limit".
type FieldError struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

// Error is the one error type that crosses package boundaries with a meaning
// for the caller. Any other error is treated as internal: it is logged once
// and never shown to a client.
type Error struct {
	Code    string
	Message string
	Fields  []FieldError
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("keyward: %s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EINVALID error naming each given field error.
func Invalid(fields ...FieldError) *Error {
	msg := "the request is invalid"
	if len(fields) == 1 {
		msg = fields[0].Detail
	}
	return &Error{Code: EINVALID, Message: msg, Fields: fields}
}

// JoinInvalid returns nil when every one of errs is nil, else the first
// that is not a validation error (an *Error with EINVALID), else one
// validation error listing the fields of all, in the order given: a
// request learns every problem at once.
func JoinInvalid(errs ...error) error {
	var fields []FieldError
	for _, err := range errs {
		if err == nil {
			continue
		}
		var ke *Error
		if !errors.As(err, &ke) || ke.Code != EINVALID {
			return err
		}
		fields = append(fields, ke.Fields...)
	}
	if len(fields) == 0 {
		return nil
	}
	return Invalid(fields...)
}

// ErrorCode returns the code of err if it is or wraps an *Error, and
// EINTERNAL for any other non-nil error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err: the message of an
// *Error, or a generic text for internal errors.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
