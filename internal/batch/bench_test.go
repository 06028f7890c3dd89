package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"

	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/bus"
	"github.com/phasegate/phasegate/internal/clock"
	"github.com/phasegate/phasegate/internal/config"
	"github.com/phasegate/phasegate/internal/effect"
	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/fsclient"
	"github.com/phasegate/phasegate/internal/metrics"
	"github.com/phasegate/phasegate/internal/testenv"
)

// BenchmarkBatchDesigns records one batch of 10,000 players (2,000 with
// -short) from 100 concurrent senders on the emulator, four ways:
//
//   - phasegate with DUAL_WRITE_MODE=false (subcollection only);
//   - phasegate with the default flags (dual writes, subcollection reads,
//     the legacy array capped at 900);
//   - the running system's design: ArrayUnion on completed_players plus an
//     Increment of completed_count on the batch document, then a read of
//     the document to see whether the batch is complete;
//   - the floor: a bare Create of one document per player, nothing else.
//
// Each completion that fails is retried up to five times, as Pub/Sub would
// redeliver it; one that never succeeds is lost. It reports completions per
// second, lost completions, and writes that landed on the batch document,
// counted by a gRPC interceptor on every Commit. Run with
// `go test -run '^$' -bench BatchDesigns -benchtime 1x ./internal/batch`.
func BenchmarkBatchDesigns(b *testing.B) {
	n, rounds := 10000, 2
	if testing.Short() {
		n, rounds = 2000, 1
	}
	const senders = 100
	designs := []struct {
		name string
		run  func(b *testing.B, w *world, players []string) (lost int)
	}{
		{"floor_create_only", runFloor},
		{"phasegate_dual_write_false", runPhasegate(flags(true, false, true))},
		{"phasegate_defaults", runPhasegate(func(*config.Config) {})},
		{"running_system_array_union", runLegacyDesign},
	}
	playerList := func(n int) []string {
		ps := make([]string, n)
		for j := range ps {
			ps[j] = player(j)
		}
		rand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		return ps
	}
	// The emulator is a JVM: warm every path up first, or whichever design
	// runs first pays for the JIT.
	for i, d := range designs {
		warm := 3000
		if i == len(designs)-1 {
			warm = 300
		}
		d.run(b, newWorld(b), playerList(warm))
	}
	// Rounds rotate the order, and the best round counts: the machine is
	// shared, and a design should not be judged by another process's burst.
	type result struct {
		rates        []float64
		lost, writes float64
		best         float64
	}
	res := make([]result, len(designs))
	for r := range rounds {
		for j := range designs {
			i := (j + r) % len(designs)
			w := newWorld(b)
			start := time.Now()
			lost := designs[i].run(b, w, playerList(n))
			rate := float64(n) / time.Since(start).Seconds()
			res[i].rates = append(res[i].rates, rate)
			res[i].lost = max(res[i].lost, float64(lost))
			if rate > res[i].best {
				res[i].best, res[i].writes = rate, float64(w.batchWrites.Load())
			}
		}
	}
	for i, d := range designs {
		b.Run(d.name, func(b *testing.B) {
			b.ReportMetric(res[i].best, "completions/s")
			b.ReportMetric(res[i].lost, "lost")
			b.ReportMetric(res[i].writes, "batchdoc_writes")
			b.ReportMetric(0, "ns/op")
		})
	}
	floor, running := res[0].best, res[len(res)-1].best
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%d players, %d senders, best of %d rounds\n%-28s %14s %5s %17s %9s %10s  %s\n", n, senders, rounds,
		"design", "completions/s", "lost", "batch doc writes", "vs floor", "vs running", "rounds")
	for i, d := range designs {
		var rs []string
		for _, x := range res[i].rates {
			rs = append(rs, fmt.Sprintf("%.0f", x))
		}
		fmt.Fprintf(&sb, "%-28s %14.0f %5.0f %17.0f %8.0f%% %9.1fx  %s\n", d.name, res[i].best, res[i].lost, res[i].writes,
			100*res[i].best/floor, res[i].best/running, strings.Join(rs, " "))
	}
	fmt.Fprint(os.Stdout, sb.String())
}

// world is a fresh project with clients whose Commits are inspected.
type world struct {
	project     string
	fs          *firestore.Client
	opts        []option.ClientOption
	batchDoc    string // resource name of the batch document
	batchWrites atomic.Int64
}

func newWorld(b *testing.B) *world {
	w := &world{project: testenv.Project(b)}
	w.batchDoc = fmt.Sprintf("projects/%s/databases/(default)/documents/%s/bench", w.project, batch.Collection)
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if c, ok := req.(*pb.CommitRequest); ok && err == nil {
			for _, wr := range c.Writes {
				if wr.GetUpdate().GetName() == w.batchDoc || wr.GetTransform().GetDocument() == w.batchDoc {
					w.batchWrites.Add(1)
				}
			}
		}
		return err
	}
	dial := func() option.ClientOption {
		conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"), grpc.WithUnaryInterceptor(count))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		return option.WithGRPCConn(conn)
	}
	fs, err := firestore.NewClient(context.Background(), w.project, dial())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fs.Close() })
	w.fs, w.opts = fs, []option.ClientOption{dial()}
	return w
}

func (w *world) createBatch(b *testing.B, expected int) {
	now := time.Now()
	_, err := w.fs.Collection(batch.Collection).Doc("bench").Create(context.Background(), map[string]any{
		"batch_id": "bench", "game_date": gameDate, "expected_players": expected, "completed_players": []string{},
		"completed_count": 0, "total_predictions": 0, "is_complete": false, "start_time": now, "updated_at": now,
		"correlation_id": "corr-bench",
	})
	if err != nil {
		b.Fatal(err)
	}
}

// fanOut runs f for every player with senders goroutines, retrying a failed
// completion up to five times; it returns how many never succeeded.
func fanOut(players []string, senders int, f func(p string) error) int {
	var lost atomic.Int64
	ch := make(chan string)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for p := range ch {
				var err error
				for try := 0; try < 5; try++ {
					if err = f(p); err == nil {
						break
					}
					time.Sleep(time.Duration(try*try*20) * time.Millisecond)
				}
				if err != nil {
					lost.Add(1)
				}
			}
		})
	}
	for _, p := range players {
		ch <- p
	}
	close(ch)
	wg.Wait()
	return int(lost.Load())
}

func runFloor(b *testing.B, w *world, players []string) int {
	ctx := context.Background()
	col := w.fs.Collection(batch.Collection).Doc("bench").Collection(batch.CompletionsSub)
	lost := fanOut(players, 100, func(p string) error {
		_, err := col.Doc(p).Create(ctx, map[string]any{"player_lookup": p, "completed_at": time.Now(), "predictions_count": preds(p)})
		if err != nil && strings.Contains(err.Error(), "AlreadyExists") {
			return nil // an earlier try landed
		}
		return err
	})
	agg, err := col.NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if got := agg["n"].(*pb.Value).GetIntegerValue(); int(got) != len(players)-lost {
		b.Fatalf("floor: %d documents, want %d", got, len(players)-lost)
	}
	return lost
}

// recorder is a Publisher that keeps what it was given.
type recorder struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (r *recorder) Publish(_ context.Context, _ string, data []byte, _ map[string]string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, data)
	return fmt.Sprint(len(r.msgs)), nil
}

func runPhasegate(mode func(*config.Config)) func(b *testing.B, w *world, players []string) int {
	return func(b *testing.B, w *world, players []string) int {
		ctx := context.Background()
		cfg := config.Default()
		cfg.ProjectID = w.project
		mode(cfg)
		pub := &recorder{}
		clients, err := fsclient.Open(ctx, w.project, w.opts...)
		if err != nil {
			b.Fatal(err)
		}
		defer clients.Close()
		reg := &metrics.Registry{}
		eng := &effect.Engine{FS: w.fs, Clock: clock.Real{}, Log: slog.New(slog.DiscardHandler), Metrics: reg, Retention: time.Hour,
			Owners: map[string]effect.Owner{}, Sinks: map[effect.Kind]effect.Sink{effect.Publish: bus.Sink{P: pub, Topics: cfg.OutputTopics()}}}
		t := batch.New(batch.Deps{Firestore: w.fs, Effects: eng, Clock: clock.Real{}, Metrics: reg, Config: cfg, Raw: clients.Raw})
		eng.Owners[t.Collection()] = t
		w.createBatch(b, len(players))
		lost := fanOut(players, 100, func(p string) error {
			_, err := t.Record(ctx, &batch.Completion{PlayerLookup: p, GameDate: gameDate, BatchID: "bench",
				PredictionsGenerated: int64(preds(p))}, "m-"+p)
			return err
		})
		if len(pub.msgs) != 1 {
			b.Fatalf("phasegate published %d batch completions, want 1", len(pub.msgs))
		}
		var m batch.Message
		if err := json.Unmarshal(pub.msgs[0], &m); err != nil {
			b.Fatal(err)
		}
		if m.Metadata.CompletedPlayers != int64(len(players)) || lost != 0 {
			b.Fatalf("phasegate: %d completed players, %d lost", m.Metadata.CompletedPlayers, lost)
		}
		if testing.Verbose() {
			snap := t.Metrics.Snapshot()
			keys := make([]string, 0, len(snap))
			for k := range snap {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				b.Logf("%s=%d", k, snap[k])
			}
		}
		return len(players) - int(m.Metadata.CompletedPlayers)
	}
}

// runLegacyDesign is the running coordinator's design: one hot document.
func runLegacyDesign(b *testing.B, w *world, players []string) int {
	ctx := context.Background()
	ref := w.fs.Collection(batch.Collection).Doc("bench")
	w.createBatch(b, len(players))
	var completed atomic.Int32
	fanOut(players, 100, func(p string) error {
		_, err := ref.Update(ctx, []firestore.Update{
			{Path: "completed_players", Value: firestore.ArrayUnion(p)},
			{Path: "completed_count", Value: firestore.Increment(1)},
			{Path: "total_predictions", Value: firestore.Increment(preds(p))},
			{Path: "updated_at", Value: time.Now()},
		})
		if err != nil {
			return err
		}
		snap, err := ref.Get(ctx)
		if err != nil {
			return err
		}
		if arr, _ := snap.Data()["completed_players"].([]any); len(arr) >= len(players) && completed.CompareAndSwap(0, 1) {
			_, err = ref.Update(ctx, []firestore.Update{{Path: "is_complete", Value: true}, {Path: "completion_time", Value: time.Now()}})
		}
		return err
	})
	snap, err := ref.Get(ctx)
	if err != nil {
		b.Fatal(err)
	}
	arr, _ := snap.Data()["completed_players"].([]any)
	return len(players) - len(arr)
}
