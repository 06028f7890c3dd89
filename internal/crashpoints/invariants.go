package crashpoints

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/api/iterator"

	"github.com/phasegate/phasegate/internal/batch"
	"github.com/phasegate/phasegate/internal/config"
)

// observation is what a run left, seen from outside: what the consumers
// received, what Slack took, the history table's rows, the contract fields
// of the documents, plus what the one storage-dependent function says is
// still owed. problems are invariants that hold on their own, whatever
// the recording run did.
type observation struct {
	triggers map[string]int    // trigger key → copies the consumer received
	reasons  map[string]string // trigger key → trigger_reason, or a batch message's status and counts
	topics   map[string]string // trigger key → topic
	alerts   map[string]int    // "route title" → messages Slack took
	// groups count the distinct alerts and "resolved"s Slack took per date
	// and phase (a "resolved" has its own title, so it pairs by these).
	groups  map[string]*group
	history map[string]int    // history key → rows in the table
	docs    map[string]string // document → its contract fields, summarised
	// owed are the titles of alerts whose cause is on record: a partial
	// trigger or batch message, a failure in _failed_attempts, a capped
	// array with a completed player left out.
	owed     []string
	problems []string
}

func (w *world) observe() *observation {
	o := &observation{triggers: map[string]int{}, reasons: map[string]string{}, topics: map[string]string{},
		alerts: map[string]int{}, groups: map[string]*group{}, history: map[string]int{}, docs: map[string]string{}}
	o.messages(w)
	for _, p := range w.slack.Delivered() {
		title := TitleOf(p.Text)
		o.alerts[p.Path+" "+title]++
		g := groupOf(p.Body)
		if o.groups[g] == nil {
			o.groups[g] = &group{raised: map[string]bool{}, resolved: map[string]bool{}}
		}
		if strings.HasPrefix(title, "resolved:") {
			o.groups[g].resolved[title] = true
		} else {
			o.groups[g].raised[title] = true
		}
	}
	if w.bq != nil {
		o.historyRows(w)
	}
	for _, p := range w.cfg.Phases {
		o.gates(w, &p)
	}
	o.batches(w)
	for _, title := range o.owed {
		if !raisedIn(o.alerts, title) {
			o.problems = append(o.problems, fmt.Sprintf("alert %q never sent, though its cause is on record", title))
		}
	}
	owed, err := owedOrClaimed(w.ctx, w.fs, w.cfg)
	w.must(err, "read what is owed")
	o.problems = append(o.problems, prefix("left owed or claimed: ", owed)...)
	w.mu.Lock()
	for _, d := range w.pending {
		o.problems = append(o.problems, fmt.Sprintf("%s %s never acknowledged", d.ep, d.id))
	}
	o.problems = append(o.problems, w.fourxx...)
	w.mu.Unlock()
	return o
}

// group is the alerts of one date and phase.
type group struct{ raised, resolved map[string]bool }

// groupOf reads an alert's date and phase from its Slack message: the
// "Date" and "Phase" fields of an alert, the context line ("date · phase ·
// detail") of a "resolved".
func groupOf(body map[string]any) string {
	var date, phase string
	blocks, _ := body["blocks"].([]any)
	for _, b := range blocks {
		b, _ := b.(map[string]any)
		fields, _ := b["fields"].([]any)
		for _, f := range fields {
			text, _ := f.(map[string]any)["text"].(string)
			if v, ok := strings.CutPrefix(text, "*Date*\n"); ok {
				date = v
			}
			if v, ok := strings.CutPrefix(text, "*Phase*\n"); ok {
				phase = v
			}
		}
		if b["type"] == "context" && date == "" {
			elems, _ := b["elements"].([]any)
			for _, e := range elems {
				text, _ := e.(map[string]any)["text"].(string)
				parts := strings.Split(text, " · ")
				date = parts[0]
				if len(parts) > 1 && strings.Contains(parts[1], "phase") {
					phase = parts[1]
				}
			}
		}
	}
	if phase == "" || phase == "–" {
		phase = "-"
	}
	return date + " " + phase
}

func prefix(p string, s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = p + x
	}
	return out
}

// messages reads every consumer subscription: gate triggers by trigger_id,
// batch completions by batch id, dead letters as problems.
func (o *observation) messages(w *world) {
	first := map[string]string{}
	copyOf := func(key string, data []byte) {
		if prev, ok := first[key]; ok && prev != string(data) {
			o.problems = append(o.problems, fmt.Sprintf("copies of %s differ: %s / %s", key, prev, data))
		}
		first[key] = string(data)
	}
	for _, topic := range w.topics() {
		for _, m := range w.Pull(topic) {
			switch topic {
			case w.cfg.Topics.DeadLetter:
				o.problems = append(o.problems, fmt.Sprintf("dead-lettered (%s): %s", m.Attributes["reason"], m.Attributes["entry_point"]))
			case w.cfg.Topics.BatchComplete:
				var msg batch.Message
				if err := json.Unmarshal(m.Data, &msg); err != nil {
					o.problems = append(o.problems, "batch completion is not JSON: "+err.Error())
					continue
				}
				key := "batch:" + msg.ExecutionID
				copyOf(key, m.Data)
				o.triggers[key]++
				o.topics[key] = topic
				o.reasons[key] = fmt.Sprintf("%s %d/%d", msg.Status, msg.Metadata.CompletedPlayers, msg.Metadata.ExpectedPlayers)
				if msg.Status == batch.StatusPartial {
					o.owed = append(o.owed, fmt.Sprintf("batch going on without data: %s (%s)", msg.Metadata.BatchID, msg.Metadata.StallReason))
				}
			default:
				var msg struct {
					TriggerID     string `json:"trigger_id"`
					TriggerReason string `json:"trigger_reason"`
					IsPartial     bool   `json:"is_partial"`
				}
				if err := json.Unmarshal(m.Data, &msg); err != nil || msg.TriggerID == "" || m.Attributes["trigger_id"] != msg.TriggerID {
					o.problems = append(o.problems, fmt.Sprintf("trigger on %s without a trigger_id agreeing with its attribute: %s", topic, m.Data))
					continue
				}
				copyOf(msg.TriggerID, m.Data)
				o.triggers[msg.TriggerID]++
				o.topics[msg.TriggerID] = topic
				o.reasons[msg.TriggerID] = msg.TriggerReason
				if msg.IsPartial {
					o.owed = append(o.owed, fmt.Sprintf("%s went on without data (%s)", m.Attributes["phase"], msg.TriggerReason))
				}
			}
		}
	}
}

// historyRows counts the history table's rows by the key in their metadata.
func (o *observation) historyRows(w *world) {
	ds, table, _ := strings.Cut(w.cfg.BigQuery.HistoryTable, ".")
	it, err := w.bq.Query(fmt.Sprintf("SELECT metadata FROM `%s.%s.%s`", bqProject, ds, table)).Read(w.ctx)
	w.must(err, "query the history table")
	for {
		var row struct{ Metadata string }
		err := it.Next(&row)
		if err == iterator.Done {
			break
		}
		w.must(err, "read the history table")
		var md struct {
			Key string `json:"history_key"`
		}
		_ = json.Unmarshal([]byte(row.Metadata), &md)
		o.history[md.Key]++
	}
}

// gates summarises each gate document's contract fields (CONTRACT §4): the
// processors recorded and their status, the count, whether and why it
// triggered; the count must agree with the records.
func (o *observation) gates(w *world, p *config.Phase) {
	docs, err := w.fs.Collection(p.Collection).Documents(w.ctx).GetAll()
	w.must(err, "read "+p.Collection)
	for _, d := range docs {
		m := d.Data()
		var recs []string
		done := 0
		for k, v := range m {
			rec, ok := v.(map[string]any)
			if strings.HasPrefix(k, "_") || !ok || rec["status"] == nil {
				continue
			}
			recs = append(recs, fmt.Sprintf("%s=%v", k, rec["status"]))
			if s := rec["status"]; slices.Contains(p.Expected, k) && (s == "success" || s == "partial") {
				done++
			}
		}
		slices.Sort(recs)
		failed, _ := m["_failed_attempts"].(map[string]any)
		for name, f := range failed {
			if f, ok := f.(map[string]any); ok {
				o.owed = append(o.owed, fmt.Sprintf("%s reported %v for %s", name, f["status"], d.Ref.ID))
			}
		}
		path := p.Collection + "/" + d.Ref.ID
		o.docs[path] = fmt.Sprintf("%v _completed_count=%v _triggered=%v", recs, m["_completed_count"], m["_triggered"])
		if m["_completed_count"] != int64(done) {
			o.problems = append(o.problems, fmt.Sprintf("%s: _completed_count %v, %d processors recorded complete", path, m["_completed_count"], done))
		}
	}
}

// batches summarises each batch: its completion documents, completion, and
// count; the count must be exact, and where the legacy array is capped it
// must hold players that completed, each once, up to the cap.
func (o *observation) batches(w *world) {
	docs, err := w.fs.Collection(batch.Collection).Documents(w.ctx).GetAll()
	w.must(err, "read batches")
	for _, d := range docs {
		m := d.Data()
		comps, err := d.Ref.Collection(batch.CompletionsSub).Documents(w.ctx).GetAll()
		w.must(err, "read completions")
		var players []string
		for _, c := range comps {
			p, _ := c.Data()["player_lookup"].(string)
			players = append(players, p)
		}
		slices.Sort(players)
		path := batch.Collection + "/" + d.Ref.ID
		o.docs[path] = fmt.Sprintf("completions=%v is_complete=%v completed_count=%v", players, m["is_complete"], m["completed_count"])
		if c, ok := m["completed_count"]; ok && m["is_complete"] == true && c != int64(len(players)) {
			o.problems = append(o.problems, fmt.Sprintf("%s: completed_count %v, %d completion documents", path, c, len(players)))
		}
		if id, _ := m["batch_id"].(string); o.reasons["batch:"+id] != "" {
			status, counts, _ := strings.Cut(o.reasons["batch:"+id], " ")
			if done, _, _ := strings.Cut(counts, "/"); done != fmt.Sprint(len(players)) {
				o.problems = append(o.problems, fmt.Sprintf("%s: the %s completion message counts %s players, %d completion documents", path, status, done, len(players)))
			}
		}
		if id, _ := m["batch_id"].(string); w.cfg.Batch.DualWrite.Enabled(id) && w.cfg.Batch.UseSubcollectionReads.Enabled(id) {
			o.problems = append(o.problems, legacyArray(path, stringsOf(m[batch.FieldArray]), players, w.cfg.Batch.ArrayCap)...)
			if len(players) > w.cfg.Batch.ArrayCap {
				o.owed = append(o.owed, fmt.Sprintf("prediction batch %s: completed_players capped at %d", id, w.cfg.Batch.ArrayCap))
			}
		}
	}
}

// legacyArray checks a capped completed_players: completed players only,
// each once, as many as completed up to the cap.
func legacyArray(path string, array, completed []string, limit int) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range array {
		if seen[p] {
			out = append(out, fmt.Sprintf("%s: %s twice in completed_players", path, p))
		}
		seen[p] = true
		if !slices.Contains(completed, p) {
			out = append(out, fmt.Sprintf("%s: %s in completed_players without a completion document", path, p))
		}
	}
	if want := min(limit, len(completed)); len(seen) != want {
		out = append(out, fmt.Sprintf("%s: completed_players holds %d players, want %d (%d completed, cap %d): players lost",
			path, len(seen), want, len(completed), limit))
	}
	return out
}

func stringsOf(v any) []string {
	vs, _ := v.([]any)
	out := make([]string, 0, len(vs))
	for _, x := range vs {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// verdict compares an injected run with the recording: the same triggers
// (each once, a copy only where the fault hit its publish or what records
// it), the same alerts (each once, a copy only where the fault hit that
// post or what records it), every alert of a date and phase resolved when
// the recording resolved all of that date and phase's (a "resolved" has a
// title of its own, so it pairs by date and phase), the same history rows
// (each once), the same documents, and the run's own problems (which
// include every alert whose cause is on record).
//
// A fault may legitimately change the path: a trigger delayed past a late
// completion goes out as all_complete where the recording's was partial; a
// data check that failed is an error, not a block. An alert or history row
// of the recording's path whose cause is not on record in the run is then
// not owed; it is noted, not counted.
func verdict(base, run *observation, calls []Call) (out, notes []string) {
	out = slices.Clone(run.problems)
	inj := slices.IndexFunc(calls, func(c Call) bool { return c.Fault != NoFault })
	for _, k := range union(base.triggers, run.triggers) {
		want, got := base.triggers[k], run.triggers[k]
		allowed := want + allowTrigger(calls, inj, run.topics[k])
		switch {
		case want == 0:
			out = append(out, fmt.Sprintf("trigger %s (%s) the recording never published, %d times", k, run.reasons[k], got))
		case got == 0:
			out = append(out, fmt.Sprintf("trigger %s lost", k))
		case got > allowed:
			out = append(out, fmt.Sprintf("trigger %s published %d times (%s)", k, got, copyCause(calls, inj)))
		case got > want:
			notes = append(notes, fmt.Sprintf("a copy of %s", k))
		}
		if run.reasons[k] != base.reasons[k] && got > 0 {
			notes = append(notes, fmt.Sprintf("%s went out as %s, the recording's %s", k, run.reasons[k], base.reasons[k]))
		}
	}
	for _, k := range union(base.alerts, run.alerts) {
		want, got := base.alerts[k], run.alerts[k]
		route, title, _ := strings.Cut(k, " ")
		allowed := max(want, 1) + allowAlert(calls, inj, route, title)
		switch {
		case got > allowed:
			out = append(out, fmt.Sprintf("alert %q sent %d times (%s)", k, got, copyCause(calls, inj)))
		case got < want && !slices.Contains(run.owed, title):
			notes = append(notes, fmt.Sprintf("%q not sent: its cause is not on record in this run", k))
		case got > max(want, 1):
			notes = append(notes, fmt.Sprintf("a copy of alert %q", k))
		}
	}
	for _, g := range union(base.groups, run.groups) {
		b, r := base.groups[g], run.groups[g]
		if r == nil {
			continue
		}
		unresolved := 0 // alerts the recording left open (a stall, a capped array): causes that never clear
		if b != nil {
			unresolved = max(len(b.raised)-len(b.resolved), 0)
		}
		if need := len(r.raised) - unresolved; len(r.resolved) < need {
			out = append(out, fmt.Sprintf("alerts of %s: %d raised, %d resolved, the recording left %d open", g, len(r.raised), len(r.resolved), unresolved))
		}
	}
	for _, k := range union(base.history, run.history) {
		want, got := base.history[k], run.history[k]
		switch {
		case want == 0:
			out = append(out, fmt.Sprintf("history row %s the recording never wrote", k))
		case got == 0 && run.triggers[historyTrigger(k)] > 0:
			out = append(out, fmt.Sprintf("history row %s lost", k))
		case got == 0:
			notes = append(notes, fmt.Sprintf("history row %s not written: its cause is not on record in this run", k))
		case got > 1 && insertBursts(calls, k) > 1:
			out = append(out, fmt.Sprintf("history row %s written %d times", k, got))
		}
	}
	for _, k := range union(base.docs, run.docs) {
		if base.docs[k] != run.docs[k] {
			out = append(out, fmt.Sprintf("%s is %s; the recording's %s", k, orNone(run.docs[k]), orNone(base.docs[k])))
		}
	}
	return out, notes
}

// historyTrigger is the trigger a history key records: a trigger_id is its
// own key, a batch's key is its id; a block's key names no trigger.
func historyTrigger(key string) string {
	if strings.Count(key, ":") == 2 {
		return key
	}
	return "batch:" + key
}

func orNone(s string) string {
	if s == "" {
		return "missing"
	}
	return s
}

func union[V any](a, b map[string]V) []string {
	ks := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

func raisedIn(alerts map[string]int, title string) bool {
	for k := range alerts {
		if _, t, _ := strings.Cut(k, " "); t == title {
			return true
		}
	}
	return false
}

// allowTrigger is 1 when the injected call is the trigger's publish, or
// records it (see recordOf).
func allowTrigger(calls []Call, inj int, topic string) int {
	if inj < 0 {
		return 0
	}
	if c := calls[inj]; c.Method == "Publish" && c.Resource == topic {
		return 1
	}
	return recordOf(calls, inj, func(x Call) bool { return x.Method == "Publish" && x.Resource == topic })
}

// allowAlert is 1 when the injected call is the alert's post, or records
// it.
func allowAlert(calls []Call, inj int, route, title string) int {
	if inj < 0 {
		return 0
	}
	if c := calls[inj]; c.Method == "SlackPost" && c.Resource == route && c.Key == title {
		return 1
	}
	return recordOf(calls, inj, func(x Call) bool { return x.Method == "SlackPost" && x.Resource == route && x.Key == title })
}

// recordOf is 1 when calls[inj] records the last call before it matching
// sent that its destination took — a read or the commit that records the
// delivery, from the sending instance, before any such commit — or when
// calls[inj] crashed an instance that had made such a call and not yet
// recorded it: it died between the delivery and its record, the one case
// the contract allows a copy for. Effects are performed concurrently, so
// the call the crash hit may be another effect's, begun before or after
// the delivery; a window widened by a slow call sequenced inside it shows
// through that call's fail and err-after faults instead.
func recordOf(calls []Call, inj int, sent func(Call) bool) int {
	if calls[inj].Fault == Crash {
		inst := calls[inj].Inst
		for i, x := range calls {
			if x.Inst == inst && sent(x) && x.Took && !recordedAfter(calls, i) {
				return 1
			}
		}
		return 0
	}
	first := -1
	for i := inj - 1; i >= 0 && first < 0; i-- {
		if sent(calls[i]) && calls[i].Took {
			first = i
		}
	}
	if first < 0 || calls[inj].Inst != calls[first].Inst {
		return 0
	}
	for i := first + 1; i < inj; i++ {
		if calls[i].Inst == calls[first].Inst && recordsDelivery(calls[i], calls[first]) {
			return 0
		}
	}
	switch c := calls[inj]; {
	case c.Method == "Commit":
		return b2i(recordsDelivery(c, calls[first]))
	case c.Method == "Publish", c.Method == "SlackPost", strings.HasPrefix(c.Method, "BigQuery"):
		return 0
	}
	return 1 // a read of the read-modify-write that records it
}

// recordedAfter reports whether calls[i]'s instance recorded its delivery
// later (a commit that took).
func recordedAfter(calls []Call, i int) bool {
	for _, x := range calls[i+1:] {
		if x.Inst == calls[i].Inst && x.Took && recordsDelivery(x, calls[i]) {
			return true
		}
	}
	return false
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// copyCause names the injected call, for a violation's description.
func copyCause(calls []Call, inj int) string {
	if inj < 0 {
		return "no fault injected"
	}
	return "fault at " + calls[inj].Point.String()
}

// insertBursts counts the separate times a history key was inserted: the
// BigQuery emulator ignores insertIds, while BigQuery drops a repeated
// insertId within about a minute (best effort), so inserts of one key
// within a minute of each other are one row there.
func insertBursts(calls []Call, key string) int {
	var at []time.Time
	for _, c := range calls {
		if c.Method == "BigQuery.insertAll" && c.Took && slices.Contains(strings.Split(c.Key, ","), key) {
			at = append(at, c.At)
		}
	}
	bursts := 0
	var start time.Time
	for _, t := range at {
		if bursts == 0 || t.Sub(start) > time.Minute {
			bursts++
			start = t
		}
	}
	return bursts
}
