package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// Handler serves GET ?date=YYYY-MM-DD[,…], GET ?batch_id=…, GET
// ?from=&to= (a range, CONTRACT §13) and a bare GET (New York's today and
// yesterday), as JSON, or as an HTML page when the client asks for
// text/html: a timeline per date, or a grid of the range.
func (r *Reader) Handler(batch BatchStatus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			http.Error(w, "GET ?date=YYYY-MM-DD[,…], ?from=YYYY-MM-DD&to=YYYY-MM-DD or ?batch_id=…", http.StatusMethodNotAllowed)
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
		case q.Has("from") || q.Has("to"):
			r.serveSeason(w, req, q)
			return
		default:
			now := r.Clock.Now()
			// A bare GET is the night in progress: New York's today and yesterday.
			dates := []gamedate.Date{gamedate.Today(now), gamedate.Today(now).AddDays(-1)}
			if q.Has("date") {
				var err error
				if dates, err = ParseDates(q.Get("date"), now); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
			}
			days, err := r.Dates(req.Context(), dates)
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			if wantsHTML(req) {
				writeHTML(w, func(buf *bytes.Buffer) error { return renderPage(buf, newPage(days, dates, now)) })
				return
			}
			v = map[string]any{"dates": days}
		}
		writeJSON(w, v)
	})
}

// serveSeason answers a range: ?from= and ?to=, either optional, never
// with ?date=.
func (r *Reader) serveSeason(w http.ResponseWriter, req *http.Request, q url.Values) {
	if q.Has("date") {
		http.Error(w, "date cannot be combined with from or to: ask for dates or for a range", http.StatusBadRequest)
		return
	}
	for _, k := range []string{"from", "to"} {
		if q.Has(k) && q.Get(k) == "" {
			http.Error(w, k+": empty; want YYYY-MM-DD", http.StatusBadRequest)
			return
		}
	}
	now := r.Clock.Now()
	from, to, err := ParseRange(q.Get("from"), q.Get("to"), now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s, err := r.Season(req.Context(), from, to)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if wantsHTML(req) {
		writeHTML(w, func(buf *bytes.Buffer) error { return renderSeason(buf, newSeasonPage(s, now)) })
		return
	}
	writeJSON(w, s)
}

// writeHTML renders a page whole before answering, so that a template
// error is a 500 rather than half a page.
func writeHTML(w http.ResponseWriter, render func(*bytes.Buffer) error) {
	var buf bytes.Buffer
	if err := render(&buf); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
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
