package loadtest

import (
	"io"
	"net"
	"sync"
)

// Relay forwards TCP connections to a backend and can cut them all: the
// instances reach the Pub/Sub emulator through it, so that a soak can take
// Pub/Sub away from them while it drains and restarts the emulator, and
// give it back only once the topics and subscriptions exist again.
type Relay struct {
	Addr    string
	backend string
	ln      net.Listener

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]bool
}

// StartRelay listens on a loopback port and forwards to backend.
func StartRelay(backend string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{Addr: ln.Addr().String(), backend: backend, ln: ln, conns: map[net.Conn]bool{}}
	go r.serve()
	return r, nil
}

func (r *Relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.forward(c)
	}
}

func (r *Relay) forward(c net.Conn) {
	r.mu.Lock()
	paused := r.paused
	r.mu.Unlock()
	if paused {
		c.Close() // as a refused connection: the client backs off and tries again
		return
	}
	b, err := net.Dial("tcp", r.backend)
	if err != nil {
		c.Close()
		return
	}
	if !r.track(c, b) {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(b, c); b.Close() })
	wg.Go(func() { _, _ = io.Copy(c, b); c.Close() })
	wg.Wait()
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, b)
	r.mu.Unlock()
}

// track registers a connection pair unless a pause came in between.
func (r *Relay) track(c, b net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paused {
		c.Close()
		b.Close()
		return false
	}
	r.conns[c], r.conns[b] = true, true
	return true
}

// Pause cuts every connection and refuses new ones: a request in flight
// may or may not have reached the backend, as in a real outage.
func (r *Relay) Pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paused = true
	for c := range r.conns {
		c.Close()
	}
}

// Resume accepts connections again.
func (r *Relay) Resume() {
	r.mu.Lock()
	r.paused = false
	r.mu.Unlock()
}

// Close stops listening and cuts every connection.
func (r *Relay) Close() {
	r.ln.Close()
	r.Pause()
}
