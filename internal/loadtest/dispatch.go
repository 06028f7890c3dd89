package loadtest

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/phasegate/phasegate/internal/envelope"
)

// Dispatcher pushes messages to a fleet as a Pub/Sub push subscription
// does through Eventarc: one CloudEvent per attempt, redelivered with
// exponential backoff until an instance answers 2xx (or 4xx: phasegate
// answers those only for messages it dead-lettered), with Cloud Run's
// front end in between: a request waits at most QueueTimeout for a free
// slot on the instance it was routed to, else it is refused with 429.
type Dispatcher struct {
	Fleet        *Fleet
	QueueTimeout time.Duration
	MinBackoff   time.Duration
	MaxBackoff   time.Duration
	Deadline     time.Duration // a message is given up after this long (Pub/Sub's retention is days)

	mu    sync.Mutex
	codes map[int]int // attempts by status; 0 = connection failed, 429 = queue timeout
}

// Codes returns attempts by status.
func (d *Dispatcher) Codes() map[int]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[int]int{}
	for k, v := range d.codes {
		out[k] = v
	}
	return out
}

func (d *Dispatcher) count(code int) {
	d.mu.Lock()
	if d.codes == nil {
		d.codes = map[int]int{}
	}
	d.codes[code]++
	d.mu.Unlock()
}

// Deliver pushes one message until it is acknowledged and returns the final
// status (0 if it was given up).
func (d *Dispatcher) Deliver(ctx context.Context, ep, id string, data []byte) int {
	body := envelope.PushBody(id, data, nil, time.Now())
	pause := d.MinBackoff
	deadline := time.Now().Add(d.Deadline)
	for {
		code := d.attempt(ctx, ep, id, body)
		d.count(code)
		if code >= 200 && code < 500 && code != http.StatusTooManyRequests {
			return code
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0
		}
		wait := pause/2 + rand.N(pause/2+1)
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(wait):
		}
		pause = min(2*pause, d.MaxBackoff)
	}
}

func (d *Dispatcher) attempt(ctx context.Context, ep, id string, body []byte) int {
	in := d.Fleet.pick()
	if in == nil {
		return 0 // no instance up: Pub/Sub sees an error and backs off
	}
	in.busy.Add(1)
	defer in.busy.Add(-1)
	select {
	case in.slots <- struct{}{}:
	case <-time.After(d.QueueTimeout):
		return http.StatusTooManyRequests
	case <-ctx.Done():
		return 0
	}
	defer func() { <-in.slots }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Fleet.url(in, ep), bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
	req.Header.Set("ce-source", "//pubsub.googleapis.com/projects/loadtest/topics/t")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
