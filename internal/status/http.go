package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/phasegate/phasegate/internal/gamedate"
)

// MaxDates bounds one Status request.
const MaxDates = 31

// BatchStatus returns a prediction batch's state as a JSON-able value, or
// found=false. q is the request's query, for its options (a page of the
// completion list); an error wrapping ErrBadRequest answers 400.
type BatchStatus func(ctx context.Context, batchID string, q url.Values) (v any, found bool, err error)

// ErrBadRequest marks an error that is the request's fault.
var ErrBadRequest = errors.New("bad request")

// Handler serves GET ?date=YYYY-MM-DD[,…] and GET ?batch_id=…, as JSON, or
// as an HTML page when the client asks for text/html.
func (r *Reader) Handler(batch BatchStatus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			http.Error(w, "GET ?date=YYYY-MM-DD[,…] or ?batch_id=…", http.StatusMethodNotAllowed)
			return
		}
		q := req.URL.Query()
		var v any
		switch {
		case q.Get("batch_id") != "" && batch != nil:
			b, found, err := batch(req.Context(), q.Get("batch_id"), q)
			if errors.Is(err, ErrBadRequest) {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			if !found {
				http.Error(w, "no batch "+q.Get("batch_id"), http.StatusNotFound)
				return
			}
			v = b
		case q.Get("date") != "":
			dates, err := ParseDates(q.Get("date"), r.Clock.Now())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			days, err := r.Dates(req.Context(), dates)
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			if wantsHTML(req) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				_ = page.Execute(w, days)
				return
			}
			v = map[string]any{"dates": days}
		default:
			http.Error(w, "GET ?date=YYYY-MM-DD[,…] or ?batch_id=…", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	})
}

// ParseDates reads a comma-separated list of game dates; "today" is New
// York's at now.
func ParseDates(s string, now time.Time) ([]gamedate.Date, error) {
	var out []gamedate.Date
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "today" {
			out = append(out, gamedate.Today(now))
			continue
		}
		d, err := gamedate.Parse(part)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if len(out) > MaxDates {
		return nil, fmt.Errorf("at most %d dates per request", MaxDates)
	}
	return out, nil
}

func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

var page = template.Must(template.New("status").Parse(`<!doctype html>
<meta charset="utf-8"><title>phasegate status</title>
<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.ok{color:#070}.no{color:#a00}</style>
{{range .}}<h2>{{.GameDate}}</h2>
<table><tr><th>phase</th><th>completed</th><th>missing</th><th>trigger</th><th>reason</th><th>mode</th><th>late</th><th>unexpected</th><th>failed</th></tr>
{{range .Phases}}<tr><td>{{.Phase}}</td><td>{{len .Completed}}/{{len .Expected}}</td><td>{{range .Missing}}{{.}} {{end}}</td>
<td class="{{if .Triggered}}ok{{else}}no{{end}}">{{if .Triggered}}{{.TriggerID}}{{else}}{{or .TriggerState "waiting"}}{{end}}</td>
<td>{{.TriggerReason}}</td><td>{{.Mode}}</td><td>{{range .Late}}{{.}} {{end}}</td><td>{{range .Unexpected}}{{.}} {{end}}</td><td>{{range .Failed}}{{.}} {{end}}</td></tr>
{{end}}</table>{{end}}`))
