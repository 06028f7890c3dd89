package indexcheck_test

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"

	"github.com/phasegate/phasegate/internal/emulator"
	"github.com/phasegate/phasegate/internal/indexcheck"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Queries sent by the real client to the emulator are recorded and checked:
// deploy/firestore.indexes.json serves the batch sweep's query; the same
// file without that index fails with the JSON to add and who sent it.
func TestRecordedQueryWithoutIndexFails(t *testing.T) {
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "queries.jsonl")
	rec := indexcheck.NewRecorder(logPath)
	conn, err := emulator.FirestoreConn(os.Getenv("FIRESTORE_EMULATOR_HOST"), rec.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	client, err := firestore.NewClient(ctx, testenv.Project(t), option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	open := client.Collection("prediction_batches").Where("is_complete", "==", false).
		Where("start_time", ">=", time.Now().Add(-time.Hour)).OrderBy("start_time", firestore.Desc).Limit(5)
	if _, err := open.Documents(ctx).GetAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := open.NewAggregationQuery().WithCount("n").Get(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Collection("prediction_batches").Where("batch_id", "==", "secret-value").Documents(ctx).GetAll(); err != nil {
		t.Fatal(err)
	}

	real, err := indexcheck.IndexFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := indexcheck.CheckLog(logPath, real); err != nil {
		t.Fatalf("the repository's index file does not serve the batch sweep's query: %v", err)
	}
	logged, _ := os.ReadFile(logPath)
	if strings.Contains(string(logged), "secret-value") || strings.Count(string(logged), "\n") != 3 {
		t.Fatalf("want 3 shapes without values:\n%s", logged)
	}

	f, err := indexcheck.Load(real)
	if err != nil {
		t.Fatal(err)
	}
	var kept []indexcheck.Index
	for _, ix := range f.Indexes {
		if ix.CollectionGroup != "prediction_batches" {
			kept = append(kept, ix)
		}
	}
	f.Indexes = kept
	without := filepath.Join(t.TempDir(), "firestore.indexes.json")
	b, _ := json.Marshal(f)
	if err := os.WriteFile(without, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = indexcheck.CheckLog(logPath, without)
	if err == nil {
		t.Fatal("a query without its index passed")
	}
	for _, want := range []string{
		`prediction_batches: is_complete ==, order by start_time DESCENDING`,
		`sent from internal/indexcheck_test/e2e_test.go:`,
		`TestRecordedQueryWithoutIndexFails`,
		`add to "indexes":`,
		`{"collectionGroup":"prediction_batches","queryScope":"COLLECTION","fields":[{"fieldPath":"is_complete","order":"ASCENDING"},{"fieldPath":"start_time","order":"DESCENDING"}]}`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("failure message lacks %q:\n%v", want, err)
		}
	}
	t.Log(err)
}

// Every Firestore client phasegate creates is made on a connection from
// fsclient.Conn, which carries the interceptors internal/emulator registers
// in every binary that links it (the tests, the local commands), so that on
// the emulator its queries are recorded and checked: a client made with
// firestore.NewClient elsewhere would escape the check, unless the file
// hands it such a connection (fsclient.Open, emulator.FirestoreConn).
func TestEveryFirestoreClientIsRecorded(t *testing.T) {
	index, err := indexcheck.IndexFile()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(index))
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		names := map[string]string{} // local name → import path
		for _, im := range file.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			local := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				local = im.Name.Name
			}
			names[local] = p
		}
		dialsRecorded := false
		var made []string
		ast.Inspect(file, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			x, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			switch p := names[x.Name]; {
			case p == "github.com/phasegate/phasegate/internal/emulator" && sel.Sel.Name == "FirestoreConn",
				p == "github.com/phasegate/phasegate/internal/fsclient" && sel.Sel.Name == "Conn":
				dialsRecorded = true
			case (p == "cloud.google.com/go/firestore" || p == "cloud.google.com/go/firestore/apiv1") &&
				strings.HasPrefix(sel.Sel.Name, "NewClient"):
				made = append(made, x.Name+"."+sel.Sel.Name)
			}
			return true
		})
		// fsclient.Open is the constructor itself: it dials through Conn.
		if len(made) > 0 && !dialsRecorded && rel != filepath.Join("internal", "fsclient", "fsclient.go") {
			t.Errorf("%s: %v: create Firestore clients with fsclient.Open or emulator.NewFirestore (or on a connection from fsclient.Conn or emulator.FirestoreConn), so that the index check sees their queries", rel, made)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
