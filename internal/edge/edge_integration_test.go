package edge_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/phasegate/phasegate/internal/apptest"
	"github.com/phasegate/phasegate/internal/envelope"
	"github.com/phasegate/phasegate/internal/logging"
	"github.com/phasegate/phasegate/internal/opstate"
	"github.com/phasegate/phasegate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// badCase is one request that can never succeed.
type badCase struct {
	name   string
	ep     string
	body   []byte
	header map[string]string
	reason string
	id     string // original_message_id of the copy ("" when the envelope is unparseable)
	data   []byte // the copy's data: the message data, or the raw body
	trunc  bool   // the copy is cut to fit Pub/Sub's limit
}

// decoded reports whether the envelope decoded, so that the edge knew the
// message id before it logged.
func (c badCase) decoded() bool { return c.id != "" && c.reason != "data_not_base64" }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// push builds a push body by hand, so that data can be anything, base64 or not.
func push(id, data string, caseName string) []byte {
	return []byte(`{"message":{"data":"` + data + `","messageId":"` + id + `","attributes":{"case":"` + caseName +
		`","origin":"processor"},"publishTime":"2026-01-20T06:00:00Z"},"subscription":"projects/p/subscriptions/s"}`)
}

func completion(name, date, status string) string {
	b, _ := json.Marshal(map[string]any{"processor_name": name, "game_date": date, "status": status, "execution_id": "e1"})
	return string(b)
}

// cases builds the bad input of CONTRACT §1 for every kind of entry point.
func cases() []badCase {
	var cs []badCase
	// msg adds a case whose envelope is fine and whose data is bad.
	msg := func(name, ep, data, reason string) {
		id := "bad-" + name
		cs = append(cs, badCase{name: name, ep: ep, body: push(id, b64(data), name), reason: reason, id: id, data: []byte(data)})
	}
	// raw adds a case whose body has no parseable envelope.
	raw := func(name, ep string, body []byte, header map[string]string) {
		cs = append(cs, badCase{name: name, ep: ep, body: body, header: header, reason: "unparseable_envelope", data: body})
	}
	cs = append(cs, badCase{name: "data_not_base64", ep: "Phase2To3", body: push("bad-b64", "%%% not base64 %%%", "data_not_base64"),
		reason: "data_not_base64", id: "bad-b64", data: []byte("%%% not base64 %%%")})
	msg("not_json", "Phase3To4", "this is not JSON", "not_json_object")
	msg("json_array", "Phase3To4", `[`+completion("PlayerGameSummaryProcessor", "2026-01-19", "success")+`]`, "not_json_object")
	msg("truncated_json", "Phase4To5", `{"processor_name":"MLFeatureStoreProcessor","game_da`, "invalid_json")
	msg("missing_date", "Phase3To4", `{"processor_name":"PlayerGameSummaryProcessor","status":"success"}`, "missing_game_date")
	msg("impossible_date", "Phase3To4", completion("PlayerGameSummaryProcessor", "2026-02-30", "success"), "invalid_game_date")
	msg("path_date", "Phase3To4", completion("PlayerGameSummaryProcessor", "../x", "success"), "invalid_game_date")
	msg("path_date_10_bytes", "Phase2To3", completion("NbacScheduleProcessor", "../../../x", "success"), "invalid_game_date")
	msg("slash_date", "Phase4To5", completion("MLFeatureStoreProcessor", "2026/01/19", "success"), "invalid_game_date")
	msg("path_name", "Phase3To4", completion("../../phase3_completion/2026-01-19", "2026-01-19", "success"), "invalid_processor_name")
	msg("dotted_name", "Phase4To5", completion("ml.feature_store", "2026-01-19", "success"), "invalid_processor_name")
	msg("reserved_name", "Phase2To3", completion("__name__", "2026-01-19", "success"), "invalid_processor_name")
	msg("long_name", "Phase3To4", completion(strings.Repeat("A", 600<<10), "2026-01-19", "success"), "processor_name_too_long")
	msg("missing_status", "Phase4To5", `{"processor_name":"MLFeatureStoreProcessor","game_date":"2026-01-19"}`, "missing_status")
	msg("empty_data", "Phase3To4", "", "empty_message")
	raw("empty_body", "Phase3To4", []byte{}, nil)
	raw("no_message_key", "Phase3To4", []byte(`{"subscription":"projects/p/subscriptions/s"}`), nil)
	raw("json_array_body", "Phase2To3", []byte(`[`+string(push("x", b64("{}"), "x"))+`]`), nil)
	raw("not_json_body", "Phase4To5", []byte("hello, orchestrator"), nil)

	// Eventarc's CloudEvents with bad data, in both modes.
	ceData := completion("PlayerGameSummaryProcessor", "2026-13-01", "success")
	cs = append(cs, badCase{name: "structured_bad_data", ep: "Phase3To4",
		body: []byte(`{"specversion":"1.0","id":"ce-structured","type":"google.cloud.pubsub.topic.v1.messagePublished",` +
			`"source":"//pubsub.googleapis.com/projects/p/topics/nba-phase3-analytics-complete","datacontenttype":"application/json",` +
			`"data":` + string(push("bad-structured", b64(ceData), "structured_bad_data")) + `}`),
		header: map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"},
		reason: "invalid_game_date", id: "bad-structured", data: []byte(ceData)})
	raw("structured_data_not_envelope", "Phase3To4", []byte(`{"specversion":"1.0","id":"ce-2","type":"t","source":"s","data":"just a string"}`),
		map[string]string{"Content-Type": "application/cloudevents+json"})
	binData := `{"processor_name":"PlayerGameSummaryProcessor","game_date":"2026-01-19","status":"finished"}`
	cs = append(cs, badCase{name: "binary_bad_data", ep: "Phase3To4", body: push("", b64(binData), "binary_bad_data"),
		header: map[string]string{"Content-Type": "application/json", "ce-id": "ce-binary", "ce-specversion": "1.0",
			"ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "ce-source": "//pubsub.googleapis.com/projects/p/topics/t"},
		reason: "invalid_status", id: "ce-binary", data: []byte(binData)})

	// Bodies beyond Pub/Sub's 10 MB: the copy is cut to fit, and says so.
	huge := completion(strings.Repeat("B", 10<<20), "2026-01-19", "success")
	cs = append(cs, badCase{name: "data_over_10mb", ep: "Phase4To5", body: push("bad-huge", b64(huge), "data_over_10mb"),
		reason: "processor_name_too_long", id: "bad-huge", data: []byte(huge[:9<<20]), trunc: true})
	tooBig := bytes.Repeat([]byte("x"), envelope.MaxBody+10)
	cs = append(cs, badCase{name: "body_over_limit", ep: "Phase2To3", body: tooBig, reason: "unparseable_envelope",
		data: tooBig[:9<<20], trunc: true})

	// The Sweep takes any message: an envelope it cannot parse is
	// acknowledged and copied like any other.
	raw("sweep_garbage", "Sweep", []byte("\x00\xffnot an envelope"), nil)
	raw("sweep_empty_body", "Sweep", []byte{}, nil)
	return cs
}

// Every kind of bad input, through the real edge and gate on the emulators:
// acknowledged with a 2xx, logged with its reason, copied to the dead-letter
// topic with reason, entry_point and original_message_id and the original
// data (the raw body when there is no envelope), and never written to
// Firestore, at a path derived from it or anywhere else.
func TestBadInputAcknowledgedAndDeadLettered(t *testing.T) {
	e := apptest.New(t)
	logs := &apptest.Logs{}
	e.App.Edge.Log = logging.New(logs, slog.LevelDebug)
	dlq := e.Sub(e.Cfg.Topics.DeadLetter)

	cs := cases()
	for _, c := range cs {
		if code := serve(t, e, c.ep, c.body, c.header); code < 200 || code > 299 {
			t.Errorf("%s: %s answered %d, want 2xx", c.name, c.ep, code)
		}
	}
	// The Sweep runs on any envelope, whatever its data.
	sweeps := 0
	for i, data := range []string{"", "not json", `[1,2,3]`, `{"unexpected":true}`, "\x00\xff"} {
		body := envelope.PushBody(fmt.Sprintf("sweep-%d", i), []byte(data), nil, time.Now())
		if code := serve(t, e, "Sweep", body, nil); code != http.StatusNoContent {
			t.Errorf("Sweep with data %q answered %d, want 204", data, code)
		}
		sweeps++
	}
	if n := e.Metrics.Get("sweep.runs"); n != int64(sweeps) {
		t.Errorf("sweep ran %d times for %d parseable sweep messages", n, sweeps)
	}

	copies := dlq.Drain(t, 2*time.Second)
	matchCopies(t, cs, copies)
	matchLogs(t, cs, logs.Lines(t))
	noWrites(t, e)
}

func serve(t *testing.T, e *apptest.Env, ep string, body []byte, header map[string]string) int {
	t.Helper()
	h, ok := e.App.Handler(ep)
	if !ok {
		t.Fatalf("no entry point %s", ep)
	}
	req := httptest.NewRequest(http.MethodPost, "/"+ep, bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

// matchCopies pairs each dead-letter copy with its case, exactly once.
func matchCopies(t *testing.T, cs []badCase, copies []*pubsubpb.PubsubMessage) {
	t.Helper()
	if len(copies) != len(cs) {
		t.Errorf("%d dead-letter copies, want %d (one per bad message)", len(copies), len(cs))
	}
	matched := make([]bool, len(cs))
	for _, m := range copies {
		a := m.Attributes
		i := -1
		for j, c := range cs {
			if !matched[j] && a["entry_point"] == c.ep && a["original_message_id"] == c.id && bytes.Equal(m.Data, c.data) {
				i = j
				break
			}
		}
		if i < 0 {
			t.Errorf("unexpected dead-letter copy: attributes %v, data %.80q (%d bytes)", a, m.Data, len(m.Data))
			continue
		}
		matched[i] = true
		c := cs[i]
		if a["reason"] != c.reason {
			t.Errorf("%s: copy's reason %q, want %q", c.name, a["reason"], c.reason)
		}
		if c.id != "" && (a["case"] != c.name || a["origin"] != "processor") {
			t.Errorf("%s: the original attributes were not carried: %v", c.name, a)
		}
		if (a["truncated"] == "true") != c.trunc {
			t.Errorf("%s: truncated attribute %q, want %v", c.name, a["truncated"], c.trunc)
		}
	}
	for j, c := range cs {
		if !matched[j] {
			t.Errorf("%s: no dead-letter copy (want reason %s, original_message_id %q)", c.name, c.reason, c.id)
		}
	}
}

// matchLogs finds, for each case, the edge's warning with its reason,
// labelled with the entry point and the message id.
func matchLogs(t *testing.T, cs []badCase, lines []map[string]any) {
	t.Helper()
	for _, c := range cs {
		found := false
		for _, l := range lines {
			labels, _ := l["logging.googleapis.com/labels"].(map[string]any)
			if l["message"] == "bad input acknowledged and dead-lettered" && l["severity"] == "WARNING" &&
				l["reason"] == c.reason && labels["entry_point"] == c.ep && (!c.decoded() || labels["message_id"] == c.id) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: no warning logged with reason %s for %s", c.name, c.reason, c.ep)
		}
	}
}

// noWrites checks that bad input wrote nothing: no collection exists at all,
// and no gate collection holds a document, even a missing parent of a deeper
// path.
func noWrites(t *testing.T, e *apptest.Env) {
	t.Helper()
	ctx := context.Background()
	cols, err := e.App.FS.Collections(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cols {
		if c.ID == opstate.Collection {
			// The sweeps' own facts, and nothing else, may be there: the
			// heartbeat, and the ledger's one-time seeding per phase.
			refs, err := c.DocumentRefs(ctx).GetAll()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(refs, func(r *firestore.DocumentRef) bool {
				return r.ID != "sweep" && !strings.HasPrefix(r.ID, "ledger-seeded-")
			}) {
				continue
			}
		}
		names = append(names, c.ID)
	}
	if len(names) > 0 {
		t.Errorf("bad input wrote to Firestore: collections %v", names)
	}
	for _, p := range e.Cfg.Phases {
		refs, err := e.App.FS.Collection(p.Collection).DocumentRefs(ctx).GetAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(refs) > 0 {
			t.Errorf("%s has documents after bad input: %v", p.Collection, paths(refs))
		}
	}
}

func paths(refs []*firestore.DocumentRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Path)
	}
	return out
}

// A message id that is not valid UTF-8 (a ce-id header is bytes; JSON fields
// are always valid) cannot be stored in Firestore or sent as a Pub/Sub
// attribute as it is. It must neither make a good message fail forever nor
// keep a bad one from its dead-letter copy.
func TestInvalidUTF8MessageID(t *testing.T) {
	e := apptest.New(t)
	dlq := e.Sub(e.Cfg.Topics.DeadLetter)
	header := map[string]string{"Content-Type": "application/json", "ce-id": "\xb6id\xff", "ce-specversion": "1.0",
		"ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "ce-source": "//pubsub.googleapis.com/projects/p/topics/t"}
	good := completion("PlayerGameSummaryProcessor", "2026-01-19", "success")
	if code := serve(t, e, "Phase3To4", push("", b64(good), "good"), header); code != http.StatusNoContent {
		t.Errorf("good completion with a non-UTF-8 ce-id: status %d, want 204", code)
	}
	if doc := e.Doc("phase3_completion/2026-01-19"); doc == nil || doc["player_game_summary"] == nil {
		t.Errorf("completion not recorded: %v", doc)
	}
	bad := completion("PlayerGameSummaryProcessor", "2026-01-19", "done")
	if code := serve(t, e, "Phase3To4", push("", b64(bad), "bad"), header); code != http.StatusOK {
		t.Errorf("bad completion with a non-UTF-8 ce-id: status %d, want 200", code)
	}
	copies := dlq.Drain(t, time.Second)
	if len(copies) != 1 || copies[0].Attributes["reason"] != "invalid_status" || string(copies[0].Data) != bad {
		t.Fatalf("dead-letter copies: %v", copies)
	}
	if id := copies[0].Attributes["original_message_id"]; id != "\ufffdid\ufffd" {
		t.Errorf("original_message_id %q, want the id with its invalid bytes replaced", id)
	}
}
