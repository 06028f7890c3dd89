package config

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Flag is a feature flag that is off, on, or on for a stable percentage of
// its unit (a game date, a batch id). The bucket of a unit never changes, so
// widening 10% → 50% keeps the first 10% on, and setting false rolls back at
// once.
type Flag struct {
	Percent int // 0 (off) … 100 (on)
}

// On and Off are the two plain flags.
var (
	On  = Flag{Percent: 100}
	Off = Flag{Percent: 0}
)

// ParseFlag accepts true/false, 1/0, on/off, yes/no, or a percentage "10%".
func ParseFlag(s string) (Flag, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "true", "1", "on", "yes":
		return On, nil
	case "false", "0", "off", "no", "":
		return Off, nil
	}
	if p, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err == nil && n >= 0 && n <= 100 {
			return Flag{Percent: n}, nil
		}
	}
	return Flag{}, fmt.Errorf("flag %q: want true/false, 1/0, on/off or a percentage like 10%%", s)
}

// Enabled reports whether the flag is on for unit: fnv32a(unit) % 100 < Percent.
func (f Flag) Enabled(unit string) bool {
	if f.Percent >= 100 {
		return true
	}
	if f.Percent <= 0 {
		return false
	}
	return Bucket(unit) < f.Percent
}

// Bucket is the unit's stable percentile, 0–99.
func Bucket(unit string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(unit))
	return int(h.Sum32() % 100)
}

func (f Flag) String() string {
	switch f.Percent {
	case 100:
		return "true"
	case 0:
		return "false"
	}
	return strconv.Itoa(f.Percent) + "%"
}

// UnmarshalYAML accepts a YAML boolean or a string such as "10%".
func (f *Flag) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := ParseFlag(s)
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// MarshalYAML writes the flag back in the form it is read.
func (f Flag) MarshalYAML() (any, error) { return f.String(), nil }
