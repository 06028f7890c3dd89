// Package slacktest is a stand-in Slack incoming-webhook server for tests and
// the demo: it records every post and answers with scripted statuses, in the
// manner of pstest.
package slacktest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// Post is one request Slack received.
type Post struct {
	Path   string
	At     time.Time
	Status int // what the server answered
	Body   map[string]any
	Text   string // the message's fallback text
	// Abandoned is set when the sender hung up before the answer (a
	// scripted Delay past its timeout): Slack posted the message, the
	// sender cannot know it did.
	Abandoned bool
}

// Reply scripts one answer.
type Reply struct {
	Status     int
	RetryAfter int // seconds, sent with a 429
	Delay      time.Duration
}

// Server is a fake webhook endpoint. Every path is a webhook.
type Server struct {
	*httptest.Server
	mu     sync.Mutex
	script []Reply
	def    Reply // answered once the script runs out
	posts  []Post
	OnPost func(Post) // called for each accepted post, e.g. to print it
	// OnRequest is called as each post arrives, before any scripted delay.
	OnRequest func(path string)
}

// New starts a server that answers 200 unless scripted otherwise.
func New() *Server {
	s := &Server{def: Reply{Status: http.StatusOK}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Script queues answers for the next requests; after them, the default
// (200 unless SetDefault changed it).
func (s *Server) Script(r ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, r...)
}

// SetDefault sets the answer given once the script has run out, from the
// next request on. r.Status must be a valid HTTP status.
func (s *Server) SetDefault(r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = r
}

// URL returns a webhook URL on the server with path name.
func (s *Server) Hook(name string) string { return s.Server.URL + "/" + name }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		// Not a webhook call: a stray probe, such as the readiness poll of
		// an emulator another test binary started on a port this server
		// took meanwhile. It must neither count nor use up the script.
		http.Error(w, "POST a webhook message", http.StatusMethodNotAllowed)
		return
	}
	b, _ := io.ReadAll(r.Body)
	if s.OnRequest != nil {
		s.OnRequest(r.URL.Path)
	}
	s.mu.Lock()
	reply := s.def
	if len(s.script) > 0 {
		reply, s.script = s.script[0], s.script[1:]
	}
	s.mu.Unlock()
	if reply.Delay > 0 {
		select {
		case <-time.After(reply.Delay):
		case <-r.Context().Done():
		}
	}
	p := Post{Path: r.URL.Path, At: time.Now(), Status: reply.Status, Abandoned: r.Context().Err() != nil}
	_ = json.Unmarshal(b, &p.Body)
	p.Text, _ = p.Body["text"].(string)
	s.mu.Lock()
	s.posts = append(s.posts, p)
	s.mu.Unlock()
	if reply.Status == http.StatusTooManyRequests && reply.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(reply.RetryAfter))
	}
	w.WriteHeader(reply.Status)
	if reply.Status == http.StatusOK {
		_, _ = io.WriteString(w, "ok")
		if s.OnPost != nil {
			s.OnPost(p)
		}
	}
}

// Posts returns every request received so far.
func (s *Server) Posts() []Post {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Post(nil), s.posts...)
}

// Delivered returns the posts answered 200.
func (s *Server) Delivered() []Post {
	var out []Post
	for _, p := range s.Posts() {
		if p.Status == http.StatusOK {
			out = append(out, p)
		}
	}
	return out
}
