package config

import "time"

// ShadowPrefix starts the name of every collection phasegate writes in
// shadow mode (CONTRACT §9).
const ShadowPrefix = "shadow_"

// ExpiresField is the TTL field of shadow documents; deploy.sh sets a
// Firestore TTL policy on it for each shadow collection group.
const ExpiresField = "_expires_at"

// Names is where phasegate keeps its documents: under the running system's
// collection names live, under ShadowPrefix in shadow mode, where each
// document also carries ExpiresField. Every collection phasegate writes is
// named through here. The zero value is live.
type Names struct {
	Prefix string
	TTL    time.Duration // 0: documents do not expire
}

// Names returns the configured mode's names.
func (c *Config) Names() Names {
	if c.Shadow() {
		return Names{Prefix: ShadowPrefix, TTL: c.ShadowTTL}
	}
	return Names{}
}

// ShadowNames returns shadow mode's names whatever the mode: compare reads
// the shadow collections beside the running system's.
func (c *Config) ShadowNames() Names {
	return Names{Prefix: ShadowPrefix, TTL: c.ShadowTTL}
}

// Coll is the collection phasegate uses for the running system's base.
func (n Names) Coll(base string) string { return n.Prefix + base }

// Expires returns the expiry of a document written at now, and whether
// documents expire at all.
func (n Names) Expires(now time.Time) (time.Time, bool) {
	return now.Add(n.TTL).UTC(), n.TTL > 0
}
