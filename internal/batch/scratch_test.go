package batch

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	vkit "cloud.google.com/go/firestore/apiv1"
	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

type owner struct{}

func (owner) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}
func (owner) RequireTransportSecurity() bool { return false }

func TestScratch(t *testing.T) {
	if os.Getenv("SCRATCH") == "" {
		t.Skip()
	}
	ctx := context.Background()
	project := fmt.Sprintf("scratch-%d", time.Now().UnixNano()%1e6)
	fs, _ := firestore.NewClient(ctx, project)
	conn, _ := grpc.NewClient(os.Getenv("FIRESTORE_EMULATOR_HOST"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(owner{}))
	vc, err := vkit.NewClient(ctx, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	db := "projects/" + project + "/databases/(default)"
	n := 3000
	conc := 100
	run := func(name string, f func(i int) error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		var errs atomic.Int64
		for range conc {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					if err := f(i); err != nil {
						errs.Add(1)
					}
				}
			})
		}
		wg.Wait()
		el := time.Since(start)
		t.Logf("%-30s %6.0f/s errs=%d", name, float64(n)/el.Seconds(), errs.Load())
	}
	mctx := metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", db)
	shard := func(b string, i int, N int) string {
		h := fnv.New32a()
		fmt.Fprintf(h, "p%d", i)
		return fmt.Sprintf("%s/documents/prediction_batches/%s/counter_shards/%d", db, b, h.Sum32()%uint32(N))
	}
	for round := 0; round < 3; round++ {
		b := fmt.Sprintf("floor%d", round)
		run("floor", func(i int) error {
			_, err := fs.Collection("prediction_batches").Doc(b).Collection("completions").Doc(fmt.Sprintf("p%d", i)).Create(ctx, map[string]any{"player_lookup": "x", "completed_at": time.Now(), "predictions_count": 3})
			return err
		})
		for _, N := range []int{16, 64, 256} {
			for _, read := range []bool{false} {
				b := fmt.Sprintf("c%d-%d-%v", round, N, read)
				run(fmt.Sprintf("commit N=%d read=%v", N, read), func(i int) error {
					name := fmt.Sprintf("%s/documents/prediction_batches/%s/completions/p%d", db, b, i)
					_, err := vc.Commit(mctx, &pb.CommitRequest{Database: db, Writes: []*pb.Write{
						{Operation: &pb.Write_Update{Update: &pb.Document{Name: name, Fields: map[string]*pb.Value{
							"player_lookup": {ValueType: &pb.Value_StringValue{StringValue: "x"}},
							"predictions_count": {ValueType: &pb.Value_IntegerValue{IntegerValue: 3}},
						}}}, CurrentDocument: &pb.Precondition{ConditionType: &pb.Precondition_Exists{Exists: false}}},
						{Operation: &pb.Write_Transform{Transform: &pb.DocumentTransform{Document: shard(b, i, N), FieldTransforms: []*pb.DocumentTransform_FieldTransform{
							{FieldPath: "count", TransformType: &pb.DocumentTransform_FieldTransform_Increment{Increment: &pb.Value{ValueType: &pb.Value_IntegerValue{IntegerValue: 1}}}},
						}}}},
					}})
					if err != nil {
						return err
					}
					if read {
						refs := make([]*firestore.DocumentRef, N)
						for k := range N {
							refs[k] = fs.Collection("prediction_batches").Doc(b).Collection("counter_shards").Doc(fmt.Sprint(k))
						}
						_, err = fs.GetAll(ctx, refs)
					}
					return err
				})
			}
		}
	}
}
