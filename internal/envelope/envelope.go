// Package envelope decodes the HTTP requests that carry a Pub/Sub message to
// a function: an Eventarc CloudEvent in binary or structured mode, or a plain
// Pub/Sub push request. All three wrap the same JSON
// {"message":{...},"subscription":"..."}.
package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/phasegate/phasegate/internal/errs"
)

// MaxBody bounds what a handler reads; Pub/Sub messages are at most 10 MB
// and base64 grows them by a third.
const MaxBody = 14 << 20

// Message is a decoded Pub/Sub message.
type Message struct {
	ID           string
	Data         []byte
	Attributes   map[string]string
	PublishTime  time.Time
	Subscription string
	// Raw is the request body as it came, for a dead-letter copy when the
	// envelope itself cannot be parsed.
	Raw []byte
}

type pushBody struct {
	Message *struct {
		Data        string            `json:"data"` // base64
		MessageID   string            `json:"messageId"`
		MessageID2  string            `json:"message_id"`
		Attributes  map[string]string `json:"attributes"`
		PublishTime string            `json:"publishTime"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

// structured is a CloudEvent in structured mode: the push body is its data.
type structured struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Data        json.RawMessage `json:"data"`
}

// Decode reads r's body and returns the message. Errors are errs.Invalid with
// reason "unparseable_envelope" (the edge dead-letters the raw body) or a
// transient error when the body could not be read.
func Decode(r *http.Request) (Message, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return Message{}, errs.E(errs.Transient, "read_body", err)
	}
	m := Message{Raw: raw}
	if len(raw) > MaxBody {
		return m, errs.Invalidf("unparseable_envelope", "body larger than %d bytes", MaxBody)
	}
	body := raw
	ceID := r.Header.Get("ce-id")
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/cloudevents+json" {
		var s structured
		if err := json.Unmarshal(raw, &s); err != nil || len(s.Data) == 0 {
			return m, errs.Invalidf("unparseable_envelope", "structured CloudEvent: %v", orMissing(err, "no data"))
		}
		body, ceID = s.Data, s.ID
	}
	var p pushBody
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&p); err != nil {
		return m, errs.Invalidf("unparseable_envelope", "push body: %v", err)
	}
	if p.Message == nil {
		return m, errs.Invalidf("unparseable_envelope", "push body has no message")
	}
	// JSON strings decode to valid UTF-8; a ce-id header is bytes. An id that
	// is not UTF-8 could be neither stored (idempotency key) nor sent as a
	// dead-letter attribute, so the message would fail forever.
	m.ID = strings.ToValidUTF8(firstNonEmpty(p.Message.MessageID, p.Message.MessageID2, ceID), "\uFFFD")
	m.Attributes = p.Message.Attributes
	m.Subscription = p.Subscription
	if p.Message.PublishTime != "" {
		if t, err := time.Parse(time.RFC3339Nano, p.Message.PublishTime); err == nil {
			m.PublishTime = t.UTC()
		}
	}
	data, err := base64.StdEncoding.DecodeString(p.Message.Data)
	if err != nil {
		// Keep what came so the dead-letter copy carries it unchanged.
		m.Data = []byte(p.Message.Data)
		return m, errs.Invalidf("data_not_base64", "message data: %v", err)
	}
	m.Data = data
	return m, nil
}

func orMissing(err error, missing string) string {
	if err != nil {
		return err.Error()
	}
	return missing
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// PushBody builds the JSON body Pub/Sub push (and Eventarc) delivers for a
// message; tests, the demo and the sweep's scheduler stand-in use it.
func PushBody(id string, data []byte, attrs map[string]string, published time.Time) []byte {
	type msg struct {
		Data        []byte            `json:"data"`
		MessageID   string            `json:"messageId"`
		Attributes  map[string]string `json:"attributes,omitempty"`
		PublishTime string            `json:"publishTime"`
	}
	b, err := json.Marshal(struct {
		Message      msg    `json:"message"`
		Subscription string `json:"subscription"`
	}{msg{data, id, attrs, published.UTC().Format(time.RFC3339Nano)}, "projects/local/subscriptions/push"})
	if err != nil {
		panic(fmt.Sprintf("envelope: marshal push body: %v", err)) // only plain types above
	}
	return b
}
