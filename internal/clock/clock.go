// Package clock injects time so that every timed rule can be tested at its
// exact edge without sleeping.
package clock

import (
	"sync"
	"time"
)

// Clock tells the current instant. Consumers take it as a dependency instead
// of calling time.Now, so tests can place "now" anywhere.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock, in UTC so that stored instants never carry a zone.
type Real struct{}

// Now returns the current UTC instant.
func (Real) Now() time.Time { return time.Now().UTC() }

// Fake is a settable clock for tests; it is safe for concurrent use because
// handlers under test run on many goroutines.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

// NewFake returns a Fake clock reading t.
func NewFake(t time.Time) *Fake { return &Fake{now: t.UTC()} }

// Now returns the fake instant.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Set moves the clock to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t.UTC()
}

// Advance moves the clock forward by d.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}
