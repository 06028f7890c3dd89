package batch_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/batch"
)

// TestStatusReadCost measures, with a gRPC interceptor, what
// GET /Status?batch_id= reads for an open 10,000-player batch (2,000 with
// -short): the batch document, its counter shards (as many as the batch
// stores; they follow the arrival rate, not the players) and the newest
// completion, whatever the batch's size. Before, it listed every
// completion document (10,018 documents read); the list is now a page on
// request.
func TestStatusReadCost(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 2000
	}
	count, rpcs := apptest.CountRPCs(t)
	e := env(t, batch.ModeDualSubReads, nil, nil, count)
	createBatch(t, e, "cost", n+1) // one player short: the batch stays open
	players := make([]string, n)
	for i := range players {
		players[i] = player(i)
	}
	deliver(t, e, "cost", players, 50)
	waitArray(t, e, "cost", min(n, e.App.Cfg.Batch.ArrayCap))
	h, _ := e.App.Handler("Status")
	get := func(url string) map[string]any {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, url, nil))
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", url, w.Code, w.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	rpcs.Take()
	st := get("/Status?batch_id=cost")
	total, methods, docs := rpcs.Take()
	t.Logf("Status?batch_id on a %d-player batch: %d RPCs %v, %d documents read", n, total, methods, docs)
	if st["distinct_players"] != float64(n) {
		t.Errorf("distinct_players = %v, want %d", st["distinct_players"], n)
	}
	shards, _ := batchDoc(t, e, "cost")[batch.FieldShardCount].(int64)
	if shards < batch.LegacyShards || docs > int(shards)+2 {
		t.Errorf("Status read %d documents, want at most %d (the batch, %d shards, the newest completion)", docs, shards+2, shards)
	}
}

// The completion list is a page on request: every player exactly once
// across the pages, each page reading at most its size plus two documents.
func TestStatusCompletionPages(t *testing.T) {
	count, rpcs := apptest.CountRPCs(t)
	e := env(t, batch.ModeDualSubReads, nil, nil, count)
	createBatch(t, e, "pages", 250)
	players := make([]string, 250)
	for i := range players {
		players[i] = player(i)
	}
	deliver(t, e, "pages", players, 20)
	waitArray(t, e, "pages", len(players))
	h, _ := e.App.Handler("Status")
	seen := map[string]int{}
	token, pages := "", 0
	for {
		url := "/Status?batch_id=pages&completions=true&page_size=100"
		if token != "" {
			url += "&page_token=" + token
		}
		rpcs.Take()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, url, nil))
		_, _, docs := rpcs.Take()
		var page batch.CompletionPage
		if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &page) != nil {
			t.Fatalf("%s: %d %s", url, w.Code, w.Body)
		}
		if docs > 102 {
			t.Errorf("a page of 100 read %d documents", docs)
		}
		for _, c := range page.Completions {
			seen[c.PlayerLookup]++
		}
		pages++
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if pages != 3 || len(seen) != 250 {
		t.Fatalf("%d pages, %d players, want 3 pages of all 250", pages, len(seen))
	}
	for p, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", p, n)
		}
	}
	for _, bad := range []string{"page_size=0", "page_size=1001", "page_size=x"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/Status?batch_id=pages&completions=true&"+bad, nil))
		if w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, w.Code)
		}
	}
}

// waitArray waits until the capped array, merged in the background, holds
// want players: a merge still running would add its reads to the ones a
// test measures.
func waitArray(t *testing.T, e *apptest.Env, id string, want int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		arr, _ := batchDoc(t, e, id)["completed_players"].([]any)
		if len(arr) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the array of %s holds %d players after 30 s, want %d", id, len(arr), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
