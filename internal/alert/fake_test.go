package alert

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// reply is one scripted answer of the fake webhook.
type reply struct {
	code       int
	retryAfter int           // seconds; 0 means no header
	delay      time.Duration // hang this long (or until the client gives up)
}

// request is what the fake received.
type request struct {
	at   time.Time
	path string
	code int
	text string // the message's plain-text fallback
	body []byte
}

// fakeSlack is an incoming-webhook endpoint serving any path, so one server
// stands in for several webhook URLs (/error, /warning, /info).
type fakeSlack struct {
	srv    *httptest.Server
	mu     sync.Mutex
	script []reply // answered in order, then def
	def    reply
	reqs   []request
}

func newFakeSlack(t *testing.T) *fakeSlack {
	f := &fakeSlack{def: reply{code: 200}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, _ := io.ReadAll(r.Body)
	var msg struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(body, &msg)
	f.mu.Lock()
	rep := f.def
	if len(f.script) > 0 {
		rep, f.script = f.script[0], f.script[1:]
	}
	f.reqs = append(f.reqs, request{at: at, path: r.URL.Path, code: rep.code, text: msg.Text, body: body})
	f.mu.Unlock()
	if rep.delay > 0 {
		select {
		case <-time.After(rep.delay):
		case <-r.Context().Done():
			return
		}
	}
	if rep.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(rep.retryAfter))
	}
	w.WriteHeader(rep.code)
	if rep.code == 200 {
		_, _ = io.WriteString(w, "ok")
	} else {
		_, _ = io.WriteString(w, "error")
	}
}

// set replaces the script and the default answer.
func (f *fakeSlack) set(def reply, script ...reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def, f.script = def, script
}

func (f *fakeSlack) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

// delivered returns the requests answered 200, i.e. messages Slack posted.
func (f *fakeSlack) delivered() []request {
	var out []request
	for _, r := range f.requests() {
		if r.code == 200 {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeSlack) url(path string) string { return f.srv.URL + path }

// testConfig is a fast configuration with every route pointing at f.
func testConfig(f *fakeSlack) config.Alerts {
	return config.Alerts{
		WebhookURL:        f.url("/info"),
		WebhookURLError:   f.url("/error"),
		WebhookURLWarning: f.url("/warning"),
		SendBudget:        2 * time.Second,
		MaxElapsed:        3 * time.Second,
		MinInterval:       0,
		RequestTimeout:    time.Second,
	}
}

func testLogger(t *testing.T) *slog.Logger { return logging.New(t.Output(), slog.LevelDebug) }
