package crashpoints

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/clock"
)

// Fault is what an injection does to the one call it hits.
type Fault int

const (
	NoFault Fault = iota
	// Fail: the call fails before taking effect.
	Fail
	// ErrAfter: the call takes effect, but the caller sees a timeout.
	ErrAfter
	// Crash: the call takes effect and the instance dies at once.
	Crash
)

func (f Fault) String() string {
	return [...]string{"none", "fail", "err-after", "crash"}[f]
}

// Site is where calls are made: a method on a resource (the collections a
// commit writes, the collection a query reads, a topic, a Slack route, a
// BigQuery table).
type Site struct{ Method, Resource string }

func (s Site) String() string { return s.Method + " " + s.Resource }

// Point names one call of a run: the n-th call (from 1) at a site.
type Point struct {
	Site
	N int
}

func (p Point) String() string { return fmt.Sprintf("%s #%d", p.Site, p.N) }

// Call is one external call that reached its destination's boundary.
type Call struct {
	Point
	Write bool      // it can take effect (a commit with writes, a publish, a post, an insert)
	Inst  int       // the App instance that made it
	At    time.Time // the fake clock when it was made
	Fault Fault     // what was injected into it
	// Took: the destination accepted it (a Slack post answered 2xx, an
	// RPC that succeeded), whatever the caller was then told — or may
	// have: it was in flight when its instance died, and its answer was
	// lost with it.
	Took bool
	// Key names what a post, an insert or a commit carries: a Slack post's
	// alert title ("resolved:" prefixed for a follow-up), a BigQuery
	// insert's row ids (the history keys), Confirmed for a commit that
	// confirms a trigger or batch, Settles for one that records an effect
	// done.
	Key string
}

// Injection is one fault at one point.
type Injection struct {
	Point Point
	Fault Fault
}

// boundary sees every external call of one run's App instances: it names
// each call, numbers it at its site, and applies the run's one injection.
type boundary struct {
	clock  *clock.Fake
	inject *Injection // nil in the recording run

	mu     sync.Mutex
	counts map[Site]int
	calls  []Call
}

func newBoundary(clk *clock.Fake, inject *Injection) *boundary {
	return &boundary{clock: clk, inject: inject, counts: map[Site]int{}}
}

// begin records a call and returns its index and the fault to apply to
// it. A dead instance's calls are not recorded: nothing of it reaches
// anything.
func (b *boundary) begin(in *instance, site Site, write bool, key string) (int, Fault, bool) {
	if in.dead.Load() {
		return 0, NoFault, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.counts[site]++
	c := Call{Point: Point{Site: site, N: b.counts[site]}, Write: write, Inst: in.id, At: b.clock.Now(), Key: key}
	if b.inject != nil && b.inject.Point == c.Point {
		c.Fault = b.inject.Fault
	}
	b.calls = append(b.calls, c)
	return len(b.calls) - 1, c.Fault, true
}

// took records that call i reached its destination and was accepted.
func (b *boundary) took(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[i].Took = true
}

// Calls returns the calls so far, in the order they were made.
func (b *boundary) Calls() []Call {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// instance is one App instance's process as the boundary sees it: once it
// dies, every later call it makes fails at once and the request it was
// serving is answered as a dropped connection.
type instance struct {
	id   int
	dead atomic.Bool

	mu       sync.Mutex
	inFlight map[int]context.CancelFunc
	next     int
}

func (in *instance) die() {
	in.dead.Store(true)
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, cancel := range in.inFlight {
		cancel()
	}
}

// serve runs f with a context the instance's death cancels.
func (in *instance) serve(ctx context.Context, f func(context.Context)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in.mu.Lock()
	in.next++
	id := in.next
	if in.inFlight == nil {
		in.inFlight = map[int]context.CancelFunc{}
	}
	in.inFlight[id] = cancel
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		delete(in.inFlight, id)
		in.mu.Unlock()
	}()
	f(ctx)
}

// The injected errors. gRPC writes fail with DEADLINE_EXCEEDED, a timeout
// reported at once, which Firestore's Commit does not retry (so phasegate
// sees it) and Pub/Sub's Publish does (as it does in production). Reads
// fail with RESOURCE_EXHAUSTED (a quota), which no read RPC retries: a
// retried read would absorb the fault and test nothing. A dead instance's
// calls fail with PERMISSION_DENIED, which no client retries, only so that
// its goroutines unwind at once; nothing they send reaches anything.
var (
	errTimeout = status.Error(codes.DeadlineExceeded, "crashpoints: injected timeout")
	errQuota   = status.Error(codes.ResourceExhausted, "crashpoints: injected read failure (quota)")
	errDead    = status.Error(codes.PermissionDenied, "crashpoints: this instance is dead")
)

// port is one instance's side of the boundary.
type port struct {
	b  *boundary
	in *instance
}

// unary intercepts Firestore's Commit, BeginTransaction and Rollback and
// Pub/Sub's Publish; other unary calls (topic administration, which only
// the emulator needs) pass unnamed.
func (p *port) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	site, write, ok := nameUnary(req)
	if !ok {
		if p.in.dead.Load() {
			return errDead
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	i, f, alive := p.b.begin(p.in, site, write, confirms(req))
	if !alive {
		return errDead
	}
	if f == Fail {
		if write {
			return errTimeout
		}
		return errQuota
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil || p.in.dead.Load() {
		p.b.took(i)
	}
	switch {
	case f == Crash:
		p.in.die()
		return errDead
	case f == ErrAfter && err == nil:
		return errTimeout
	}
	return err
}

// stream intercepts Firestore's server-streaming reads; the request is only
// known when it is sent, so naming and failing happen in the stream.
func (p *port) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if p.in.dead.Load() {
		return nil, errDead
	}
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return s, err
	}
	return &readStream{ClientStream: s, p: p, method: method}, nil
}

type readStream struct {
	grpc.ClientStream
	p      *port
	method string
	err    error
}

func (s *readStream) SendMsg(m any) error {
	if site, ok := nameStream(s.method, m); ok {
		_, f, alive := s.p.b.begin(s.p.in, site, false, "")
		switch {
		case !alive:
			s.err = errDead
		case f != NoFault:
			s.err = errQuota
		}
	}
	return s.ClientStream.SendMsg(m)
}

func (s *readStream) RecvMsg(m any) error {
	if s.err != nil {
		return s.err
	}
	return s.ClientStream.RecvMsg(m)
}

const (
	fsPrefix = "/google.firestore.v1.Firestore/"
	psPrefix = "/google.pubsub.v1.Publisher/"
)

func nameUnary(req any) (Site, bool, bool) {
	switch r := req.(type) {
	case *firestorepb.CommitRequest:
		var colls []string
		for _, w := range r.GetWrites() {
			name := w.GetUpdate().GetName()
			if name == "" {
				name = w.GetDelete()
			}
			if name == "" {
				name = w.GetTransform().GetDocument()
			}
			colls = append(colls, collectionOf(name))
		}
		if len(colls) == 0 {
			return Site{"Commit", "(read-only)"}, false, true
		}
		return Site{"Commit", joinSet(colls)}, true, true
	case *firestorepb.BeginTransactionRequest:
		return Site{"BeginTransaction", "-"}, false, true
	case *firestorepb.RollbackRequest:
		return Site{"Rollback", "-"}, false, true
	case *pubsubpb.PublishRequest:
		return Site{"Publish", lastSegment(r.GetTopic())}, true, true
	}
	return Site{}, false, false
}

// Confirmed is a commit's Key when it confirms a trigger or a batch
// completion by its contract fields (CONTRACT §4: _triggered, "true only
// once the trigger is published"; is_complete): the record of a publish.
const Confirmed = "confirms"

func confirms(req any) string {
	c, ok := req.(*firestorepb.CommitRequest)
	if !ok {
		return ""
	}
	for _, w := range c.GetWrites() {
		f := w.GetUpdate().GetFields()
		if f["_triggered"].GetBooleanValue() || f["is_complete"].GetBooleanValue() {
			return Confirmed
		}
	}
	if settles(c) {
		return Settles
	}
	return ""
}

func nameStream(method string, req any) (Site, bool) {
	switch r := req.(type) {
	case *firestorepb.BatchGetDocumentsRequest:
		var colls []string
		for _, d := range r.GetDocuments() {
			colls = append(colls, collectionOf(d))
		}
		return Site{"BatchGetDocuments", joinSet(colls)}, true
	case *firestorepb.RunQueryRequest:
		return Site{"RunQuery", fromOf(r.GetStructuredQuery())}, true
	case *firestorepb.RunAggregationQueryRequest:
		return Site{"RunAggregationQuery", fromOf(r.GetStructuredAggregationQuery().GetStructuredQuery())}, true
	}
	return Site{}, false
}

func fromOf(q *firestorepb.StructuredQuery) string {
	var colls []string
	for _, f := range q.GetFrom() {
		c := f.GetCollectionId()
		if f.GetAllDescendants() {
			c += "(group)"
		}
		colls = append(colls, c)
	}
	return joinSet(colls)
}

// collectionOf returns the collection id of a document name
// (projects/p/databases/d/documents/coll/id/sub/id → sub).
func collectionOf(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) < 2 {
		return name
	}
	return parts[len(parts)-2]
}

func lastSegment(s string) string { return s[strings.LastIndex(s, "/")+1:] }

func joinSet(s []string) string {
	slices.Sort(s)
	return strings.Join(slices.Compact(s), "+")
}

// roundTripper is one instance's HTTP side of the boundary: Slack posts and
// BigQuery calls.
type roundTripper struct {
	p    *port
	kind string // "slack" or "bigquery"
	next http.RoundTripper
}

// timeoutError is an HTTP timeout reported at once.
type timeoutError struct{ msg string }

func (e timeoutError) Error() string   { return e.msg }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }

var errHTTPDead = errors.New("crashpoints: this instance is dead")

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	site, write, key := rt.name(req)
	i, f, alive := rt.p.b.begin(rt.p.in, site, write, key)
	if !alive {
		return nil, errHTTPDead
	}
	if f == Fail {
		if !write {
			return quotaResponse(req), nil
		}
		return nil, timeoutError{"crashpoints: injected timeout before the request was sent"}
	}
	resp, err := rt.next.RoundTrip(req)
	if (err == nil && resp.StatusCode/100 == 2) || rt.p.in.dead.Load() {
		rt.p.b.took(i)
	}
	switch {
	case f == Crash:
		if err == nil {
			resp.Body.Close()
		}
		rt.p.in.die()
		return nil, errHTTPDead
	case f == ErrAfter && err == nil:
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, timeoutError{"crashpoints: injected timeout awaiting response headers"}
	}
	return resp, err
}

// quotaResponse is BigQuery refusing a read for quota, which its client
// does not retry.
func quotaResponse(req *http.Request) *http.Response {
	body := `{"error":{"code":403,"message":"crashpoints: injected read failure (quota)","errors":[{"reason":"quotaExceeded","message":"injected"}]}}`
	return &http.Response{StatusCode: http.StatusForbidden, Status: "403 Forbidden", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req}
}

func (rt roundTripper) name(req *http.Request) (Site, bool, string) {
	if rt.kind == "slack" {
		return Site{"SlackPost", req.URL.Path}, true, TitleOf(bodyField(req, "text"))
	}
	// BigQuery's REST paths: …/datasets/{d}/tables/{t}/insertAll,
	// …/queries, …/queries/{job}, …/jobs, …/jobs/{job}, …/tables/{t}.
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	at := func(key string) string {
		if i := slices.Index(parts, key); i >= 0 && i+1 < len(parts) {
			return parts[i+1]
		}
		return ""
	}
	last := parts[len(parts)-1]
	switch {
	case last == "insertAll":
		return Site{"BigQuery.insertAll", at("datasets") + "." + at("tables")}, true, insertIDs(req)
	case slices.Contains(parts, "queries") && req.Method == http.MethodPost:
		return Site{"BigQuery.query", "-"}, false, ""
	case slices.Contains(parts, "queries"):
		return Site{"BigQuery.getQueryResults", "-"}, false, ""
	case slices.Contains(parts, "jobs"):
		return Site{"BigQuery.jobs." + strings.ToLower(req.Method), "-"}, false, ""
	}
	return Site{"BigQuery." + strings.ToLower(req.Method), last}, req.Method != http.MethodGet, ""
}

// body reads a request's body and puts it back for the real send.
func body(req *http.Request) []byte {
	if req.Body == nil {
		return nil
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	return b
}

// bodyField is a top-level string field of a JSON body.
func bodyField(req *http.Request, field string) string {
	var m map[string]any
	_ = json.Unmarshal(body(req), &m)
	s, _ := m[field].(string)
	return s
}

// insertIDs are an insertAll's row ids, comma-separated.
func insertIDs(req *http.Request) string {
	var m struct {
		Rows []struct {
			InsertID string `json:"insertId"`
		} `json:"rows"`
	}
	_ = json.Unmarshal(body(req), &m)
	ids := make([]string, 0, len(m.Rows))
	for _, r := range m.Rows {
		ids = append(ids, r.InsertID)
	}
	return strings.Join(ids, ",")
}

// TitleOf names a Slack message by its alert's title, read from the text:
// "<emoji> <title> — details" for an alert, "✅ Resolved: <title>" for its
// follow-up, which is named "resolved:<title>".
func TitleOf(text string) string {
	if t, ok := strings.CutPrefix(text, "✅ Resolved: "); ok {
		return "resolved:" + t
	}
	title, _, _ := strings.Cut(text, " — ")
	if _, rest, ok := strings.Cut(title, " "); ok {
		return rest // drop the severity's emoji
	}
	return title
}
