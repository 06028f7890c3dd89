package envelope

import (
	"bytes"
	"encoding/base64"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/errs"
)

func TestDecode(t *testing.T) {
	data := []byte(`{"processor_name":"X"}`)
	b64 := base64.StdEncoding.EncodeToString(data)
	push := `{"message":{"data":"` + b64 + `","messageId":"123","attributes":{"a":"b"},"publishTime":"2026-01-20T06:00:00Z"},"subscription":"projects/p/subscriptions/s"}`
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		wantID  string
		reason  string
	}{
		{"plain push", push, nil, "123", ""},
		{"binary cloudevent", push, map[string]string{"ce-id": "ce-1", "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
			"ce-specversion": "1.0", "Content-Type": "application/json"}, "123", ""},
		{"structured cloudevent", `{"specversion":"1.0","id":"ce-9","type":"google.cloud.pubsub.topic.v1.messagePublished","source":"//pubsub","datacontenttype":"application/json","data":` + push + `}`,
			map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"}, "123", ""},
		{"snake message_id", `{"message":{"data":"` + b64 + `","message_id":"777"}}`, nil, "777", ""},
		{"id from ce-id", `{"message":{"data":"` + b64 + `"}}`, map[string]string{"ce-id": "ce-2"}, "ce-2", ""},
		{"not json", `hello`, nil, "", "unparseable_envelope"},
		{"no message", `{"subscription":"s"}`, nil, "", "unparseable_envelope"},
		{"empty body", ``, nil, "", "unparseable_envelope"},
		{"bad base64", `{"message":{"data":"%%%","messageId":"1"}}`, nil, "1", "data_not_base64"},
		{"structured without data", `{"specversion":"1.0","id":"x"}`, map[string]string{"Content-Type": "application/cloudevents+json"}, "", "unparseable_envelope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", bytes.NewReader([]byte(tt.body)))
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			m, err := Decode(r)
			if tt.reason != "" {
				if !errs.Is(err, errs.Invalid) || errs.ReasonOf(err) != tt.reason {
					t.Fatalf("err = %v, want invalid %s", err, tt.reason)
				}
				if string(m.Raw) != tt.body {
					t.Fatalf("raw body not kept for the dead-letter copy")
				}
				if m.ID != tt.wantID {
					t.Fatalf("id = %q, want %q", m.ID, tt.wantID)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.ID != tt.wantID || !bytes.Equal(m.Data, data) {
				t.Fatalf("got id %q data %q", m.ID, m.Data)
			}
		})
	}
}

func TestPushBodyRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 20, 6, 0, 0, 0, time.UTC)
	body := PushBody("m1", []byte("payload"), map[string]string{"k": "v"}, at)
	m, err := Decode(httptest.NewRequest("POST", "/", bytes.NewReader(body)))
	if err != nil || m.ID != "m1" || string(m.Data) != "payload" || m.Attributes["k"] != "v" || !m.PublishTime.Equal(at) {
		t.Fatalf("round trip: %+v, %v", m, err)
	}
}
