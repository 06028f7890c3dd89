// Package gamedate holds the pipeline's unit of work, the NBA game date, and
// the one definition of "today": the calendar day in America/New_York. The
// system it replaces computed dates in UTC and ran the wrong mode for five
// hours every evening.
package gamedate

import (
	"fmt"
	"time"
	_ "time/tzdata" // Cloud Run images may lack a zoneinfo database.
)

// Layout is the wire format of a game date.
const Layout = "2006-01-02"

var newYork = mustLoad("America/New_York")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(fmt.Sprintf("gamedate: load %s: %v", name, err))
	}
	return loc
}

// Date is a calendar date without a zone, always printed as YYYY-MM-DD.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// Parse accepts exactly YYYY-MM-DD naming a real calendar day between 2000
// and 2100; anything else is an error so that it never becomes a document id.
func Parse(s string) (Date, error) {
	if len(s) != len(Layout) {
		return Date{}, fmt.Errorf("game date %q: want YYYY-MM-DD", truncate(s))
	}
	t, err := time.Parse(Layout, s)
	if err != nil {
		return Date{}, fmt.Errorf("game date %q: %w", s, err)
	}
	if t.Year() < 2000 || t.Year() > 2100 {
		return Date{}, fmt.Errorf("game date %q: year out of range 2000-2100", s)
	}
	return Of(t), nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Of returns the calendar date of t in t's own location.
func Of(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// Today returns the New York calendar date at instant now.
func Today(now time.Time) Date { return Of(now.In(newYork)) }

// NewYork is the zone every "today" is computed in.
func NewYork() *time.Location { return newYork }

// String formats d as YYYY-MM-DD.
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day) }

// Compare returns -1, 0 or +1 as d is before, equal to or after o.
func (d Date) Compare(o Date) int {
	a := time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, time.UTC)
	b := time.Date(o.Year, o.Month, o.Day, 0, 0, 0, 0, time.UTC)
	return a.Compare(b)
}

// AddDays returns the date n days after d.
func (d Date) AddDays(n int) Date {
	return Of(time.Date(d.Year, d.Month, d.Day+n, 0, 0, 0, 0, time.UTC))
}
