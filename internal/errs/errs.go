// Package errs gives errors a kind so that the handler edge can classify
// every failure exactly once: acknowledge, retry, or dead-letter. Code below
// the edge wraps with %w and marks what it knows; it never decides the HTTP
// status itself. Modelled on upspin's errors package.
package errs

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind says what a caller should do about an error.
type Kind int

const (
	// Other is an unclassified error; the edge treats it as transient so that
	// nothing is lost, and the subscription's dead-letter policy bounds it.
	Other Kind = iota
	// Invalid is permanently bad input: ack it, log the reason, copy it to the
	// dead-letter topic. Retrying cannot help.
	Invalid
	// Transient is a failure a redelivery can finish: 5xx.
	Transient
	// Duplicate means the event was already handled: ack with no side effect.
	Duplicate
)

func (k Kind) String() string {
	switch k {
	case Invalid:
		return "invalid"
	case Transient:
		return "transient"
	case Duplicate:
		return "duplicate"
	}
	return "other"
}

// Error carries a kind and a short machine-readable reason (the dead-letter
// topic's `reason` attribute) around an underlying error.
type Error struct {
	Kind   Kind
	Reason string
	Err    error
}

func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Reason
	case e.Reason == "":
		return e.Err.Error()
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// E builds an Error. err may be nil.
func E(kind Kind, reason string, err error) error {
	return &Error{Kind: kind, Reason: reason, Err: err}
}

// Invalidf is shorthand for bad input with a formatted explanation.
func Invalidf(reason, format string, args ...any) error {
	return &Error{Kind: Invalid, Reason: reason, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the outermost explicit kind in err's chain; otherwise it
// infers Transient from gRPC codes and context errors, which is how the
// Firestore and Pub/Sub clients report an unavailable service.
func KindOf(err error) Kind {
	if err == nil {
		return Other
	}
	var e *Error
	for cur := err; errors.As(cur, &e); cur = e.Err {
		if e.Kind != Other {
			return e.Kind
		}
		if e.Err == nil {
			break
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Transient
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded, codes.ResourceExhausted,
			codes.Internal, codes.Unknown, codes.Canceled, codes.FailedPrecondition:
			return Transient
		}
	}
	return Other
}

// ReasonOf returns the outermost non-empty reason in err's chain.
func ReasonOf(err error) string {
	var e *Error
	for cur := err; errors.As(cur, &e); cur = e.Err {
		if e.Reason != "" {
			return e.Reason
		}
		if e.Err == nil {
			break
		}
	}
	return ""
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return KindOf(err) == k }
