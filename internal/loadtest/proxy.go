// Package loadtest plays a production-scale night through separate
// `phasegate serve` processes on the emulators and counts what Firestore
// sees: every instance talks to Firestore through one gRPC proxy that
// forwards calls unchanged and records each RPC and each document write.
package loadtest

import (
	"context"
	"errors"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/phasegate/phasegate/internal/emulator"
)

// rawCodec passes message bytes through: the proxy forwards what it gets
// without knowing the service, and decodes only what it counts.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// Proxy forwards every gRPC call to the Firestore emulator and counts.
type Proxy struct {
	Addr string
	srv  *grpc.Server
	conn *grpc.ClientConn

	mu     sync.Mutex
	rpcs   map[string]int       // by method
	writes map[string][]float64 // committed writes by document name, seconds since start
	start  time.Time
}

// StartProxy listens on a loopback port and forwards to the emulator at
// target.
func StartProxy(target string) (*Proxy, error) {
	conn, err := emulator.FirestoreConn(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		conn.Close()
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), conn: conn}
	p.Reset()
	p.srv = grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(p.handle),
		grpc.MaxRecvMsgSize(64<<20))
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Close stops the proxy.
func (p *Proxy) Close() {
	p.srv.Stop()
	p.conn.Close()
}

// Reset forgets every count and restarts the clock.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rpcs, p.writes, p.start = map[string]int{}, map[string][]float64{}, time.Now()
}

// Counts is a copy of what the proxy saw since the last Reset.
type Counts struct {
	RPCs   map[string]int
	Writes map[string][]float64
	Start  time.Time
}

// Snapshot copies the counts.
func (p *Proxy) Snapshot() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := Counts{RPCs: map[string]int{}, Writes: map[string][]float64{}, Start: p.start}
	for k, v := range p.rpcs {
		c.RPCs[k] = v
	}
	for k, v := range p.writes {
		c.Writes[k] = append([]float64(nil), v...)
	}
	return c
}

// hop-by-hop headers the client connection sets itself.
var dropHeaders = []string{"content-type", "user-agent", ":authority", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"}

func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ss.Context())
	md = md.Copy()
	for _, h := range dropHeaders {
		delete(md, h)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), md))
	defer cancel()
	cs, err := p.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.rpcs[shortMethod(method)]++
	p.mu.Unlock()

	var reqs [][]byte
	var reqMu sync.Mutex
	upErr := make(chan error, 1)
	go func() {
		for {
			var b []byte
			if err := ss.RecvMsg(&b); err != nil {
				if errors.Is(err, io.EOF) {
					upErr <- cs.CloseSend()
				} else {
					upErr <- err
					cancel()
				}
				return
			}
			if counted(method) {
				reqMu.Lock()
				reqs = append(reqs, b)
				reqMu.Unlock()
			}
			if err := cs.SendMsg(&b); err != nil {
				upErr <- err
				return
			}
		}
	}()
	first := true
	var resps [][]byte
	for {
		var b []byte
		err := cs.RecvMsg(&b)
		if first {
			first = false
			if h, herr := cs.Header(); herr == nil {
				_ = ss.SendHeader(h)
			}
		}
		if errors.Is(err, io.EOF) {
			ss.SetTrailer(cs.Trailer())
			reqMu.Lock()
			p.record(method, reqs, resps)
			reqMu.Unlock()
			return nil
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			return err // the status, unchanged
		}
		if method == batchWriteMethod {
			resps = append(resps, b)
		}
		if err := ss.SendMsg(&b); err != nil {
			return err
		}
	}
}

const (
	commitMethod     = "/google.firestore.v1.Firestore/Commit"
	batchWriteMethod = "/google.firestore.v1.Firestore/BatchWrite"
)

func counted(method string) bool { return method == commitMethod || method == batchWriteMethod }

func shortMethod(m string) string { return m[strings.LastIndex(m, "/")+1:] }

// record counts the writes of a call that succeeded: every write of a
// Commit, and each write of a BatchWrite whose own status is OK.
func (p *Proxy) record(method string, reqs, resps [][]byte) {
	var names []string
	switch method {
	case commitMethod:
		for _, b := range reqs {
			var r pb.CommitRequest
			if proto.Unmarshal(b, &r) == nil {
				for _, w := range r.Writes {
					names = append(names, docName(w))
				}
			}
		}
	case batchWriteMethod:
		for i, b := range reqs {
			var r pb.BatchWriteRequest
			if proto.Unmarshal(b, &r) != nil {
				continue
			}
			var res pb.BatchWriteResponse
			if i < len(resps) {
				_ = proto.Unmarshal(resps[i], &res)
			}
			for j, w := range r.Writes {
				if j < len(res.Status) && res.Status[j].GetCode() != 0 {
					continue
				}
				names = append(names, docName(w))
			}
		}
	}
	if len(names) == 0 {
		return
	}
	p.mu.Lock()
	at := time.Since(p.start).Seconds()
	for _, n := range names {
		p.writes[n] = append(p.writes[n], at)
	}
	p.mu.Unlock()
}

func docName(w *pb.Write) string {
	switch {
	case w.GetUpdate() != nil:
		return w.GetUpdate().GetName()
	case w.GetDelete() != "":
		return w.GetDelete()
	case w.GetTransform() != nil:
		return w.GetTransform().GetDocument()
	}
	return "?"
}

// maxIn returns the most writes in any window of the given length.
func maxIn(times []float64, window float64) int {
	ts := append([]float64(nil), times...)
	sort.Float64s(ts)
	best, j := 0, 0
	for i := range ts {
		for ts[i]-ts[j] >= window {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
