// Package legacytest holds documents exactly as the running Python
// orchestrators write them (testdata/*.json, one per shape: gate documents
// of the three phases triggered and not, phase 2's deadline with
// _triggered_reason, phase 4's string timestamps, a coordinator batch with
// its completed_players array), for the take-over tests.
//
// JSON has no timestamp type: {"$ts": "RFC 3339"} stands for a Firestore
// timestamp (what SERVER_TIMESTAMP leaves), a plain string stays a string
// (what Python's isoformat() leaves), integers stay integers. "_comment"
// keys are dropped.
package legacytest

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
)

//go:embed testdata/*.json
var files embed.FS

// Doc returns the fixture testdata/name.json as Firestore values.
func Doc(t testing.TB, name string) map[string]any {
	t.Helper()
	b, err := files.ReadFile("testdata/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	delete(raw, "_comment")
	out, _ := convert(raw).(map[string]any)
	return out
}

func convert(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if s, ok := x["$ts"].(string); ok && len(x) == 1 {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				panic("legacytest: bad $ts " + s)
			}
			return t
		}
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = convert(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = convert(e)
		}
		return l
	case json.Number:
		if n, err := x.Int64(); err == nil && !strings.ContainsAny(x.String(), ".eE") {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// Put writes the fixture name at path (collection/doc), replacing it, as
// the running system's full-document set does.
func Put(t testing.TB, fs *firestore.Client, path, name string) map[string]any {
	t.Helper()
	d := Doc(t, name)
	if _, err := fs.Doc(path).Set(context.Background(), d); err != nil {
		t.Fatalf("write fixture %s to %s: %v", name, path, err)
	}
	return d
}
