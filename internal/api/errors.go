package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Code classifies an error so callers can branch on it without parsing text.
type Code string

// Error codes. They are part of the wire contract: add, never rename.
const (
	CodeInvalidArgument    Code = "invalid_argument"
	CodeNotFound           Code = "not_found"
	CodeAlreadyExists      Code = "already_exists"
	CodeInUse              Code = "in_use"
	CodeFailedPrecondition Code = "failed_precondition"
	CodeUnavailable        Code = "unavailable"
	CodeIncompatible       Code = "incompatible"
	CodeCanceled           Code = "canceled"
	CodeInternal           Code = "internal"
)

// Error is what the daemon returns for a failed call: a code, one sentence
// for the user, and optionally a hint saying what to do next.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithHint returns a copy of e carrying hint.
func (e *Error) WithHint(hint string) *Error {
	c := *e
	c.Hint = hint
	return &c
}

// CodeOf returns the code of err if it is (or wraps) an *Error, else CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// IsCode reports whether err carries code.
func IsCode(err error, code Code) bool { return err != nil && CodeOf(err) == code }

func (c Code) httpStatus() int {
	switch c {
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeAlreadyExists, CodeInUse, CodeFailedPrecondition:
		return http.StatusConflict
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeIncompatible:
		return http.StatusPreconditionFailed
	case CodeCanceled:
		return 499
	default:
		return http.StatusInternalServerError
	}
}

// ErrDaemonUnreachable means nothing answered on the daemon socket; the CLI
// starts a daemon when it sees it.
var ErrDaemonUnreachable = errors.New("banger daemon is not running")
