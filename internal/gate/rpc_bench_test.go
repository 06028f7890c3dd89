package gate_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/gamedate"
)

// rpcCounter counts Firestore RPCs by method.
type rpcCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *rpcCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c.mu.Lock()
	c.n[method]++
	c.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *rpcCounter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.mu.Lock()
	c.n[method]++
	c.mu.Unlock()
	return streamer(ctx, desc, cc, method, opts...)
}

func (c *rpcCounter) take() (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for _, v := range c.n {
		total += v
	}
	m := c.n
	c.n = map[string]int{}
	return total, m
}

// emulatorOwner authenticates to the emulator as its owner, as the client
// library does for its own connection.
type emulatorOwner struct{}

func (emulatorOwner) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}

func (emulatorOwner) RequireTransportSecurity() bool { return false }

// BenchmarkGateRPCs measures the Firestore RPCs one completion costs:
// recorded without triggering, recorded and triggering, and a duplicate;
// with idempotency keys on (the default) and off. It reports RPCs per event
// and prints the methods. Rerun: make bench-gate.
func BenchmarkGateRPCs(b *testing.B) {
	for _, keys := range []string{"true", "false"} {
		b.Run("keys="+keys, func(b *testing.B) {
			c := &rpcCounter{n: map[string]int{}}
			// The client dials the emulator itself and ignores dial options,
			// so the benchmark brings its own connection.
			conn, err := grpc.NewClient(os.Getenv("FIRESTORE_EMULATOR_HOST"),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithPerRPCCredentials(emulatorOwner{}),
				grpc.WithChainUnaryInterceptor(c.intercept), grpc.WithChainStreamInterceptor(c.stream))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			e := apptest.New(b, apptest.WithConfig(func(cfg *config.Config) {
				cfg.Idempotency.Enabled, _ = config.ParseFlag(keys)
			}), apptest.WithFirestoreOptions(option.WithGRPCConn(conn)))
			kinds := map[string]*[2]int{"record": {}, "trigger": {}, "duplicate": {}}
			methods := map[string]map[string]int{}
			add := func(kind string, n int, m map[string]int) {
				kinds[kind][0] += n
				kinds[kind][1]++
				if methods[kind] == nil {
					methods[kind] = m
				}
			}
			d, _ := gamedate.Parse("2025-10-21")
			b.ResetTimer()
			for i := range b.N {
				date := d.AddDays(i).String()
				c.take()
				for j, p := range phase4 {
					if code := e.PushOnce("Phase4To5", fmt.Sprintf("m-%d-%d", i, j), apptest.Completion(p, date, "success")); code >= 300 {
						b.Fatalf("status %d", code)
					}
					kind := "record"
					if j == len(phase4)-1 {
						kind = "trigger"
					}
					n, m := c.take()
					add(kind, n, m)
				}
				e.PushOnce("Phase4To5", fmt.Sprintf("m-%d-0", i), apptest.Completion(phase4[0], date, "success"))
				n, m := c.take()
				add("duplicate", n, m)
			}
			b.StopTimer()
			for kind, v := range kinds {
				b.ReportMetric(float64(v[0])/float64(v[1]), "rpcs/"+kind)
			}
			if b.N > 1 {
				b.Logf("keys=%s methods: record %v; trigger %v; duplicate %v", keys, methods["record"], methods["trigger"], methods["duplicate"])
			}
		})
	}
}
