package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/phasegate/phasegate/internal/apptest"
)

// Both kinds of dead letter are replayed to phasegate alone: one that the
// Pub/Sub emulator's dead-letter policy really forwarded (a push
// subscription on Phase2To3's topic whose endpoint answers 500, 5 delivery
// attempts), mapped back through its source subscription's topic; and
// phasegate's own copy. Both completions are then recorded, and the
// pipeline's other subscriber of the input topic sees the original
// publication only: nothing was re-published. What cannot be replayed stays.
func TestDeadLettersReplayReachesPhasegateOnly(t *testing.T) {
	ctx := context.Background()
	e := apptest.New(t)
	t.Setenv("GCP_PROJECT", e.Project)
	t.Setenv("PREFIX", "")
	p, _ := e.Cfg.Phase("Phase2To3")
	dlq := e.Cfg.Topics.DeadLetter
	if _, err := e.App.Bus.Subscribe(ctx, dlq, inspectSubscription); err != nil {
		t.Fatal(err)
	}
	others := e.Sub(p.InputTopic) // the running pipeline's consumer of the same topic

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer down.Close()
	admin := e.App.Bus.Client().SubscriptionAdminClient
	if _, err := admin.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:             "projects/" + e.Project + "/subscriptions/eventarc-phase2to3-sub",
		Topic:            e.App.Bus.TopicName(p.InputTopic),
		PushConfig:       &pubsubpb.PushConfig{PushEndpoint: down.URL + "/Phase2To3"},
		DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{DeadLetterTopic: e.App.Bus.TopicName(dlq), MaxDeliveryAttempts: 5},
		RetryPolicy:      &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(time.Second), MaximumBackoff: durationpb.New(2 * time.Second)},
	}); err != nil {
		t.Fatal(err)
	}
	forwarded := apptest.Completion("BdlPlayerBoxscoresProcessor", "2026-01-19", "success")
	if _, err := e.App.Bus.Publish(ctx, p.InputTopic, mustJSON(t, forwarded), map[string]string{"origin": "processor"}); err != nil {
		t.Fatal(err)
	}
	// phasegate's own copy of a message it once refused (the cause since
	// fixed), and one that can never be replayed.
	own := apptest.Completion("NbacScheduleProcessor", "2026-01-19", "success")
	if _, err := e.App.Bus.Publish(ctx, dlq, mustJSON(t, own), map[string]string{
		"reason": "unexpected_processor", "entry_point": "Phase2To3", "original_message_id": "orig-7"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.App.Bus.Publish(ctx, dlq, []byte("{not json"), map[string]string{
		"reason": "unparseable_envelope", "entry_point": "Phase2To3", "original_message_id": ""}); err != nil {
		t.Fatal(err)
	}

	// The emulator forwards after its fifth attempt, seconds apart.
	var out string
	for deadline := time.Now().Add(3 * time.Minute); ; {
		var err error
		out, err = run(t, "dead-letters", "list")
		if err != nil {
			t.Fatalf("dead-letters list: %v\n%s", err, out)
		}
		if strings.Contains(out, "3 dead letters shown") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead-letter policy did not forward:\n%s", out)
		}
		time.Sleep(2 * time.Second)
	}
	if !strings.Contains(out, "delivery attempts exhausted on eventarc-phase2to3-sub") {
		t.Fatalf("list does not show the forwarded letter's source:\n%s", out)
	}

	out, err := run(t, "dead-letters", "replay")
	if err != nil || !strings.Contains(out, "2 replayed, 0 failed, 1 skipped") ||
		!strings.Contains(out, "replayed orig-7 to Phase2To3: handled") || strings.Count(out, "to Phase2To3: handled") != 2 {
		t.Fatalf("dead-letters replay: %v\n%s", err, out)
	}
	doc := e.Doc("phase2_completion/2026-01-19")
	for _, proc := range []string{"bdl_player_boxscores", "nbac_schedule"} {
		if _, ok := doc[proc].(map[string]any); !ok {
			t.Fatalf("%s not recorded after the replay: %v", proc, doc)
		}
	}
	if got := others.Drain(t, 2*time.Second); len(got) != 1 {
		t.Fatalf("the input topic's other subscriber got %d messages, want the 1 original: replay re-published", len(got))
	}
	out, err = run(t, "dead-letters", "list")
	if err != nil || !strings.Contains(out, "1 dead letters shown") || !strings.Contains(out, "unparseable_envelope") {
		t.Fatalf("after the replay, only the unreplayable letter should remain: %v\n%s", err, out)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
