package indexcheck

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// EnvVar names the file that every process's Firestore clients on the
// emulator append their query shapes to; unset, nothing is recorded.
const EnvVar = "PHASEGATE_QUERY_LOG"

// Record is one query shape as sent: the structured query without its
// values, cursors, projection and limits, and the phasegate function that
// sent it.
type Record struct {
	Query  json.RawMessage `json:"query"`
	Caller string          `json:"caller"`
}

// Recorder appends each distinct (shape, caller) once to a file.
type Recorder struct {
	path string
	mu   sync.Mutex
	seen map[string]bool
}

// NewRecorder records to path.
func NewRecorder(path string) *Recorder { return &Recorder{path: path, seen: map[string]bool{}} }

var fromEnv = sync.OnceValue(func() *Recorder {
	if p := os.Getenv(EnvVar); p != "" {
		return NewRecorder(p)
	}
	return nil
})

// DialOptions are the recording interceptors when PHASEGATE_QUERY_LOG names
// a file, and none otherwise.
func DialOptions() []grpc.DialOption {
	if r := fromEnv(); r != nil {
		return r.DialOptions()
	}
	return nil
}

// DialOptions installs r on a connection. Queries are server-streaming
// calls, so a stream interceptor sees them all.
func (r *Recorder) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainStreamInterceptor(r.stream)}
}

func (r *Recorder) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return s, err
	}
	return &recording{ClientStream: s, r: r}, nil
}

// recording sees the request as the caller sends it, on the caller's
// goroutine, so the stack names who sent the query.
type recording struct {
	grpc.ClientStream
	r *Recorder
}

func (s *recording) SendMsg(m any) error {
	var q *firestorepb.StructuredQuery
	switch req := m.(type) {
	case *firestorepb.RunQueryRequest:
		q = req.GetStructuredQuery()
	case *firestorepb.RunAggregationQueryRequest:
		q = req.GetStructuredAggregationQuery().GetStructuredQuery()
	}
	if q != nil {
		if err := s.r.record(q, caller()); err != nil {
			// Only tests record (they set PHASEGATE_QUERY_LOG); a shape not
			// recorded would be a query not checked, so stop loudly.
			panic(fmt.Sprintf("indexcheck: %v", err))
		}
	}
	return s.ClientStream.SendMsg(m)
}

func (r *Recorder) record(q *firestorepb.StructuredQuery, from string) error {
	shape := proto.Clone(q).(*firestorepb.StructuredQuery)
	shape.Select, shape.StartAt, shape.EndAt, shape.Offset, shape.Limit = nil, nil, nil, 0, nil
	stripValues(shape.GetWhere())
	b, err := protojson.Marshal(shape)
	if err != nil {
		return err
	}
	line, err := json.Marshal(Record{Query: b, Caller: from})
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[string(line)] {
		return nil
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	// One write per line: O_APPEND keeps lines of concurrent processes whole.
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		r.seen[string(line)] = true
	}
	return err
}

func stripValues(f *firestorepb.StructuredQuery_Filter) {
	if ff := f.GetFieldFilter(); ff != nil {
		ff.Value = nil
	}
	for _, sub := range f.GetCompositeFilter().GetFilters() {
		stripValues(sub)
	}
}

const module = "github.com/phasegate/phasegate/"

// caller names the innermost phasegate function on the stack, as
// "internal/batch/ops.go:231 (*Tracker).batchIDs".
func caller() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		fr, more := frames.Next()
		fn, ok := strings.CutPrefix(fr.Function, module)
		if ok && !strings.HasPrefix(fn, "internal/indexcheck.") && !strings.HasPrefix(fn, "internal/emulator.") {
			dir, name := "", fn
			if i := strings.LastIndex(fn, "/"); i >= 0 {
				dir, name = fn[:i+1], fn[i+1:]
			}
			pkg, method, _ := strings.Cut(name, ".")
			return fmt.Sprintf("%s%s/%s:%d %s", dir, pkg, filepath.Base(fr.File), fr.Line, method)
		}
		if !more {
			return "(no phasegate function on the stack)"
		}
	}
}

// ReadLog reads a file the recorders wrote.
func ReadLog(path string) ([]Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing queried
	}
	if err != nil {
		return nil, fmt.Errorf("indexcheck: %w", err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("indexcheck: %s: %w", path, err)
		}
		out = append(out, rec)
	}
	return out, sc.Err()
}

// Failure is one index the file lacks, with every place whose query needs it.
type Failure struct {
	Need    Need
	Add     string // the JSON to add …
	To      string // … to this list of the index file
	Callers []string
}

// Check returns the indexes f lacks for the recorded queries.
func Check(f *File, recs []Record) ([]Failure, error) {
	byAdd := map[string]*Failure{}
	for _, rec := range recs {
		var q firestorepb.StructuredQuery
		if err := protojson.Unmarshal(rec.Query, &q); err != nil {
			return nil, fmt.Errorf("indexcheck: recorded query: %w", err)
		}
		for _, n := range Needs(&q) {
			add, to := f.Missing(n)
			if add == "" {
				continue
			}
			fl := byAdd[add]
			if fl == nil {
				fl = &Failure{Need: n, Add: add, To: to}
				byAdd[add] = fl
			}
			if !slices.Contains(fl.Callers, rec.Caller) {
				fl.Callers = append(fl.Callers, rec.Caller)
			}
		}
	}
	out := make([]Failure, 0, len(byAdd))
	for _, fl := range byAdd {
		sort.Strings(fl.Callers)
		out = append(out, *fl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Add < out[j].Add })
	return out, nil
}

// CheckLog checks the queries recorded in logPath against the index file
// at indexPath; the error says which JSON to add where.
func CheckLog(logPath, indexPath string) error {
	f, err := Load(indexPath)
	if err != nil {
		return err
	}
	recs, err := ReadLog(logPath)
	if err != nil {
		return err
	}
	fails, err := Check(f, recs)
	if err != nil || len(fails) == 0 {
		return err
	}
	var b strings.Builder
	what := fmt.Sprintf("%d Firestore query shapes the tests sent lack their index", len(fails))
	if len(fails) == 1 {
		what = "a Firestore query shape the tests sent lacks its index"
	}
	fmt.Fprintf(&b, "indexcheck: %s in %s; production Firestore fails such a query (FAILED_PRECONDITION), the emulator does not:\n", what, indexPath)
	for _, fl := range fails {
		fmt.Fprintf(&b, "\n  %s\n", fl.Need)
		for _, c := range fl.Callers {
			fmt.Fprintf(&b, "    sent from %s\n", c)
		}
		fmt.Fprintf(&b, "    add to %q:\n      %s\n", fl.To, strings.ReplaceAll(fl.Add, "\n", "\n      "))
	}
	return errors.New(b.String())
}

// IndexFile finds deploy/firestore.indexes.json above the working directory
// (a test runs in its package's directory).
func IndexFile() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("indexcheck: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "deploy", "firestore.indexes.json"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("indexcheck: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Begin makes this process and its children record their queries, unless
// a runner above already does (PHASEGATE_QUERY_LOG set); the returned
// function then checks them against the module's index file.
func Begin() (check func() error, err error) {
	if os.Getenv(EnvVar) != "" {
		return func() error { return nil }, nil
	}
	index, err := IndexFile()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "phasegate-queries-*.jsonl")
	if err != nil {
		return nil, fmt.Errorf("indexcheck: %w", err)
	}
	f.Close()
	os.Setenv(EnvVar, f.Name())
	return func() error {
		defer os.Remove(f.Name())
		return CheckLog(f.Name(), index)
	}, nil
}
