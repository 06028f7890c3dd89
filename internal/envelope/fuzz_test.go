package envelope

import (
	"bytes"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/phasegate/phasegate/internal/errs"
)

// FuzzDecode feeds Decode arbitrary bodies, content types and ce-id headers,
// as a misconfigured publisher or subscription might send. Seeds live in
// testdata/fuzz/FuzzDecode (CloudEvents in both modes, plain push, and bad
// input of every kind); `go test` runs them as plain tests.
//
// Properties: Decode never panics; an error is errs.Invalid with a reason
// (the dead-letter attribute) or errs.Transient, never anything the edge
// would have to guess about; the raw body is kept as it came, for the
// dead-letter copy of an unparseable envelope; and a decoded message
// survives re-encoding as a push body.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"message":{"data":"e30=","messageId":"1"}}`), "application/json", "")
	f.Fuzz(func(t *testing.T, body []byte, contentType, ceID string) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		if ceID != "" {
			r.Header.Set("ce-id", ceID)
		}
		m, err := Decode(r)
		if !bytes.Equal(m.Raw, body) {
			t.Fatalf("Raw = %.60q, want the body as it came (%.60q)", m.Raw, body)
		}
		if err != nil {
			switch errs.KindOf(err) {
			case errs.Invalid:
				if errs.ReasonOf(err) == "" {
					t.Fatalf("invalid without a reason: %v", err)
				}
			case errs.Transient:
			default:
				t.Fatalf("error of kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		// What decodes survives re-encoding: the sweep's scheduler stand-in
		// and the dead-letter replay build bodies with PushBody.
		again, err := Decode(httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(PushBody(m.ID, m.Data, m.Attributes, time.Now()))))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if again.ID != m.ID || !bytes.Equal(again.Data, m.Data) || !maps.Equal(again.Attributes, m.Attributes) {
			t.Fatalf("round trip changed the message: %q %q %v → %q %q %v", m.ID, m.Data, m.Attributes, again.ID, again.Data, again.Attributes)
		}
	})
}
