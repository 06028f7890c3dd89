// Package alert tells operators in Slack that a gate went on without its
// data, a batch stalled, or that such a problem is over.
//
// It has two layers. Notifier delivers one message to an incoming webhook and
// is the only part that talks to Slack: it routes by severity and protects
// both sides from each other (retries bounded in time, a per-webhook rate
// limit, a per-webhook circuit breaker), so that an orchestration request can
// never hang on Slack. Service sits on top and gives each alert key "at most
// one message", even when many instances raise the same alert at once: the
// alert is first recorded in Firestore (collection orchestrator_alerts), and
// what a request cannot deliver within its budget stays there as an outbox
// that the scheduled sweep drains with Flush.
package alert

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"
)

// Severity picks the webhook an alert goes to (§6 of the contract).
type Severity int

const (
	// Info is for information only; it goes to SLACK_WEBHOOK_URL.
	Info Severity = iota
	// Warning is for a degraded run (and resolved follow-ups); it goes to
	// SLACK_WEBHOOK_URL_WARNING.
	Warning
	// Error is for a phase or batch going on without its data or a blocked
	// gate; it goes to SLACK_WEBHOOK_URL_ERROR.
	Error
)

// String returns the name used in logs, in Firestore and as the route label
// of Notifier.Breakers.
func (s Severity) String() string {
	switch s {
	case Warning:
		return "warning"
	case Error:
		return "error"
	}
	return "info"
}

// ParseSeverity reverses String; anything unknown is Info so that a stored
// alert from a newer version still gets delivered somewhere.
func ParseSeverity(s string) Severity {
	switch s {
	case "warning":
		return Warning
	case "error":
		return Error
	}
	return Info
}

func (s Severity) emoji() string {
	switch s {
	case Warning:
		return "⚠️"
	case Error:
		return "🚨"
	}
	return "ℹ️"
}

// Alert is one message. Key identifies the underlying problem (for example
// "phase3_to_phase4:2026-01-19:partial"): Service sends at most one alert and
// one resolved follow-up per key.
type Alert struct {
	Key       string
	Severity  Severity
	Title     string
	Phase     string
	GameDate  string
	Reason    string
	Completed int
	Expected  int
	Missing   []string
	Elapsed   time.Duration
	Detail    string
	// Resolved makes this the short follow-up that says the problem of Key
	// is over.
	Resolved bool
}

// Slack's Block Kit limits; a message that breaks one is rejected with a
// 400, which is not retried, so the alert would be lost.
const (
	maxHeader  = 150
	maxField   = 2000
	maxContext = 2000
	maxText    = 3000
)

// Message renders a as the webhook payload: Block Kit blocks plus the plain
// Text that notifications and clients without blocks show.
func Message(a Alert) *slack.WebhookMessage {
	if a.Resolved {
		return resolvedMessage(a)
	}
	title := orNone(a.Title, "Alert")
	header := slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType,
		truncate(a.Severity.emoji()+" "+title, maxHeader), true, false))

	missing := "none"
	if len(a.Missing) > 0 {
		missing = strings.Join(a.Missing, ", ")
	}
	field := func(name, value string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType,
			truncate("*"+name+"*\n"+escape(value), maxField), false, false)
	}
	fields := []*slack.TextBlockObject{
		field("Date", orNone(a.GameDate, "–")),
		field("Phase", orNone(a.Phase, "–")),
		field("Completed", completed(a)),
		field("Reason", orNone(a.Reason, "–")),
		field("Elapsed", FormatElapsed(a.Elapsed)),
		field("Missing", missing),
	}
	blocks := []slack.Block{header, slack.NewSectionBlock(nil, fields, nil)}
	if a.Detail != "" {
		blocks = append(blocks, slack.NewContextBlock("",
			slack.NewTextBlockObject(slack.MarkdownType, truncate(escape(a.Detail), maxContext), false, false)))
	}

	text := fmt.Sprintf("%s %s", a.Severity.emoji(), title)
	var parts []string
	for _, p := range []string{a.GameDate, a.Phase, a.Reason} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if a.Expected > 0 || a.Completed > 0 {
		parts = append(parts, completed(a)+" complete")
	}
	if len(a.Missing) > 0 {
		parts = append(parts, "missing: "+missing)
	}
	if len(parts) > 0 {
		text += " — " + strings.Join(parts, ", ")
	}
	return &slack.WebhookMessage{Text: truncate(escape(text), maxText), Blocks: &slack.Blocks{BlockSet: blocks}}
}

func resolvedMessage(a Alert) *slack.WebhookMessage {
	text := "✅ Resolved: " + orNone(a.Title, a.Key)
	blocks := []slack.Block{slack.NewSectionBlock(
		slack.NewTextBlockObject(slack.MarkdownType, truncate(escape(text), maxText), false, false), nil, nil)}
	var ctx []string
	for _, p := range []string{a.GameDate, a.Phase, a.Detail} {
		if p != "" {
			ctx = append(ctx, p)
		}
	}
	if len(ctx) > 0 {
		blocks = append(blocks, slack.NewContextBlock("",
			slack.NewTextBlockObject(slack.MarkdownType, truncate(escape(strings.Join(ctx, " · ")), maxContext), false, false)))
	}
	return &slack.WebhookMessage{Text: truncate(escape(text), maxText), Blocks: &slack.Blocks{BlockSet: blocks}}
}

func completed(a Alert) string {
	if a.Expected > 0 {
		return strconv.Itoa(a.Completed) + "/" + strconv.Itoa(a.Expected)
	}
	return strconv.Itoa(a.Completed)
}

// FormatElapsed rounds d for a human: "45s", "42m", "2h5m"; "–" when unknown.
func FormatElapsed(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Minute:
		return strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s"
	}
	m := int(d.Round(time.Minute) / time.Minute)
	h, m := m/60, m%60
	switch {
	case h == 0:
		return strconv.Itoa(m) + "m"
	case m == 0:
		return strconv.Itoa(h) + "h"
	}
	return strconv.Itoa(h) + "h" + strconv.Itoa(m) + "m"
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// escape keeps names and reasons from being read as Slack markup (<!here>,
// links), which is all Slack asks to be escaped.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
