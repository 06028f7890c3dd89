// Package metrics keeps per-instance counters that the Health entry point
// serves and the logs summarise. Counters are cheap and lock-free to bump;
// they are not a time series (Cloud Monitoring builds those from the logs).
package metrics

import (
	"sync"
	"sync/atomic"
)

// Registry is a set of named counters.
type Registry struct {
	m sync.Map // name → *atomic.Int64
}

// Default is the process-wide registry.
var Default = &Registry{}

// Add bumps counter name by n.
func (r *Registry) Add(name string, n int64) {
	v, ok := r.m.Load(name)
	if !ok {
		v, _ = r.m.LoadOrStore(name, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(n)
}

// Inc bumps counter name by one.
func (r *Registry) Inc(name string) { r.Add(name, 1) }

// Get returns counter name's value.
func (r *Registry) Get(name string) int64 {
	if v, ok := r.m.Load(name); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// Snapshot returns every counter's value.
func (r *Registry) Snapshot() map[string]int64 {
	out := map[string]int64{}
	r.m.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}
