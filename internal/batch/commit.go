package batch

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"

	pb "cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// commit sends writes in one Commit RPC, outside any transaction: every
// write applies atomically or none does, no lock is taken, and the
// response carries each transform's result (the counters after the
// increment), which is what lets the fast path skip reading them.
//
// A commit the store aborted (lock contention) applied nothing and is
// retried here; any other failure is the caller's.
func (t *Tracker) commit(ctx context.Context, writes ...*pb.Write) (*pb.CommitResponse, error) {
	db := t.database()
	ctx = metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", db)
	pause := 10 * time.Millisecond
	for try := 1; ; try++ {
		res, err := t.raw.Commit(ctx, &pb.CommitRequest{Database: db, Writes: writes})
		if status.Code(err) != codes.Aborted || try >= max(t.Config.Gate.WriteAttempts, 1) {
			return res, err
		}
		t.Metrics.Inc("batch.commit_aborted")
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pause + time.Duration(rand.Int64N(int64(pause)))):
		}
		pause = min(2*pause, 400*time.Millisecond)
	}
}

// database is the resource name of the client's database.
func (t *Tracker) database() string {
	p := t.Firestore.Collection(Collection).Path
	if i := strings.Index(p, "/documents/"); i >= 0 {
		return p[:i]
	}
	return p
}

func pbString(s string) *pb.Value { return &pb.Value{ValueType: &pb.Value_StringValue{StringValue: s}} }
func pbInt(n int64) *pb.Value     { return &pb.Value{ValueType: &pb.Value_IntegerValue{IntegerValue: n}} }
func pbBool(b bool) *pb.Value     { return &pb.Value{ValueType: &pb.Value_BooleanValue{BooleanValue: b}} }
func pbTime(t time.Time) *pb.Value {
	return &pb.Value{ValueType: &pb.Value_TimestampValue{TimestampValue: timestamppb.New(t)}}
}
func exists(b bool) *pb.Precondition {
	return &pb.Precondition{ConditionType: &pb.Precondition_Exists{Exists: b}}
}
func updatedAt(t time.Time) *pb.Precondition {
	return &pb.Precondition{ConditionType: &pb.Precondition_UpdateTime{UpdateTime: timestamppb.New(t)}}
}

// create writes a new document; it fails with AlreadyExists if it exists.
func create(name string, fields map[string]*pb.Value) *pb.Write {
	return &pb.Write{
		Operation:       &pb.Write_Update{Update: &pb.Document{Name: name, Fields: fields}},
		CurrentDocument: exists(false),
	}
}

// createCompletion creates a completion document stamped with the time the
// store commits it (recorded_at), by which the capped array's merges read
// completions in commit order.
func createCompletion(name string, fields map[string]*pb.Value) *pb.Write {
	w := create(name, fields)
	w.UpdateTransforms = []*pb.DocumentTransform_FieldTransform{serverTime(FieldRecordedAt)}
	return w
}

func serverTime(field string) *pb.DocumentTransform_FieldTransform {
	return &pb.DocumentTransform_FieldTransform{FieldPath: field,
		TransformType: &pb.DocumentTransform_FieldTransform_SetToServerValue{
			SetToServerValue: pb.DocumentTransform_FieldTransform_REQUEST_TIME}}
}

// update sets fields (and only those: the mask names them) and applies
// transforms. With a nil precondition it creates a missing document.
func update(name string, fields map[string]*pb.Value, pre *pb.Precondition, tr ...*pb.DocumentTransform_FieldTransform) *pb.Write {
	mask := &pb.DocumentMask{FieldPaths: make([]string, 0, len(fields))}
	for f := range fields {
		mask.FieldPaths = append(mask.FieldPaths, f)
	}
	return &pb.Write{
		Operation:        &pb.Write_Update{Update: &pb.Document{Name: name, Fields: fields}},
		UpdateMask:       mask,
		UpdateTransforms: tr,
		CurrentDocument:  pre,
	}
}

func inc(field string, n int64) *pb.DocumentTransform_FieldTransform {
	return &pb.DocumentTransform_FieldTransform{FieldPath: field,
		TransformType: &pb.DocumentTransform_FieldTransform_Increment{Increment: pbInt(n)}}
}

func union(field string, vals ...string) *pb.DocumentTransform_FieldTransform {
	arr := &pb.ArrayValue{}
	for _, v := range vals {
		arr.Values = append(arr.Values, pbString(v))
	}
	return &pb.DocumentTransform_FieldTransform{FieldPath: field,
		TransformType: &pb.DocumentTransform_FieldTransform_AppendMissingElements{AppendMissingElements: arr}}
}

// transformInt returns the j-th transform result of write i.
func transformInt(res *pb.CommitResponse, i, j int) (int64, bool) {
	if res == nil || i >= len(res.WriteResults) || j >= len(res.WriteResults[i].TransformResults) {
		return 0, false
	}
	v, ok := res.WriteResults[i].TransformResults[j].GetValueType().(*pb.Value_IntegerValue)
	if !ok {
		return 0, false
	}
	return v.IntegerValue, true
}
