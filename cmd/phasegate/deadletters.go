package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phasegate/phasegate/internal/app"
	"github.com/phasegate/phasegate/internal/envelope"
)

// inspectSubscription is the pull subscription deploy.sh creates on the
// dead-letter topic (7 days' retention), after PREFIX like every name
// phasegate owns.
const inspectSubscription = "orchestrator-dead-letter-inspect"

// Attributes Pub/Sub adds when a subscription's dead-letter policy forwards
// a message it could not deliver.
const (
	attrSourceSub     = "CloudPubSubDeadLetterSourceSubscription"
	attrSourceProject = "CloudPubSubDeadLetterSourceSubscriptionProject"
	attrPolicyPrefix  = "CloudPubSubDeadLetterSource"
)

func deadLettersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dead-letters",
		Short: "Inspect and replay messages on the dead-letter topic",
		Long: `Two kinds of message reach the dead-letter topic (orchestrator-dead-letter):
phasegate's own copies of bad input, with attributes reason, entry_point and
original_message_id; and messages a subscription's dead-letter policy
forwarded after its delivery attempts ran out, with Pub/Sub's
CloudPubSubDeadLetterSource* attributes. Read both through a pull
subscription on that topic; deploy.sh creates $PREFIX` + inspectSubscription + `.`,
	}
	var sub string
	var max int32
	list := &cobra.Command{
		Use:   "list [--subscription NAME]",
		Short: "Show dead letters without consuming them",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				msgs, err := pull(cmd, a, sub, max)
				if err != nil {
					return err
				}
				r := &resolver{a: a, topics: map[string]string{}}
				var ids []string
				for _, rm := range msgs {
					m := rm.Message
					l := r.resolve(cmd.Context(), m)
					why := l.reason
					if l.skip != "" {
						why += " (not replayable: " + l.skip + ")"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s  %-22s %-40s original=%s  %s\n", m.PublishTime.AsTime().Format("2006-01-02T15:04:05Z"),
						orDash(l.entryPoint), why, orDash(l.id), preview(m.Data))
					ids = append(ids, rm.AckId)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d dead letters shown\n", len(msgs))
				return release(cmd.Context(), a, sub, ids)
			})
		},
	}
	replay := &cobra.Command{
		Use:   "replay [--subscription NAME]",
		Short: "Deliver dead letters to their phasegate entry point, then acknowledge them",
		Long: `Replay hands each dead letter's original data and attributes (without the
dead-letter attributes) to the handler of the entry point it came from —
phasegate's own copies name it; for a message a dead-letter policy forwarded,
the source subscription's topic does — in this process, against the
configured Firestore and Pub/Sub, exactly as a push delivery would. Nothing
is re-published: the input topics are shared with the running pipeline,
whose other consumers would get the message again. A letter is acknowledged
only once its handler answered 2xx; one answered 5xx stays on the
subscription (and the command exits 1). Use it after fixing the cause, such
as a name map or a missing batch.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				msgs, err := pull(cmd, a, sub, max)
				if err != nil {
					return err
				}
				r := &resolver{a: a, topics: map[string]string{}}
				replayed, failed := 0, 0
				var keep []string
				for _, rm := range msgs {
					l := r.resolve(cmd.Context(), rm.Message)
					if l.skip != "" {
						fmt.Fprintf(cmd.OutOrStdout(), "skipped %s: cannot be replayed (%s)\n", orDash(l.id), l.skip)
						keep = append(keep, rm.AckId)
						continue
					}
					code := l.deliver(cmd.Context(), a)
					if code >= 300 {
						fmt.Fprintf(cmd.OutOrStdout(), "failed %s: %s answered %d; left on the subscription\n", l.id, l.entryPoint, code)
						keep = append(keep, rm.AckId)
						failed++
						continue
					}
					if err := a.Bus.Client().SubscriptionAdminClient.Acknowledge(cmd.Context(), &pubsubpb.AcknowledgeRequest{
						Subscription: subName(a, sub), AckIds: []string{rm.AckId}}); err != nil {
						return err
					}
					outcome := "handled"
					if code == http.StatusOK {
						outcome = "acknowledged as a duplicate or bad input (see the log)"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "replayed %s to %s: %s\n", l.id, l.entryPoint, outcome)
					replayed++
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d replayed, %d failed, %d skipped\n", replayed, failed, len(keep)-failed)
				if err := release(cmd.Context(), a, sub, keep); err != nil {
					return err
				}
				if failed > 0 {
					return fmt.Errorf("dead-letters replay: %d letters failed again", failed)
				}
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{list, replay} {
		c.Flags().StringVar(&sub, "subscription", os.Getenv("PREFIX")+inspectSubscription,
			"pull subscription on the dead-letter topic (id or full name); the default is deploy.sh's, after $PREFIX")
		c.Flags().Int32Var(&max, "max", 50, "at most this many messages")
		c.Args = noArgs
	}
	cmd.AddCommand(list, replay)
	return cmd
}

// letter is one dead letter as it will be delivered again.
type letter struct {
	entryPoint string
	id         string // the message id to deliver under
	reason     string
	data       []byte
	attrs      map[string]string // the original's, without dead-letter attributes
	published  time.Time
	skip       string // why it cannot be replayed, if it cannot
}

// resolver places dead letters, looking up each source subscription's topic
// once.
type resolver struct {
	a      *app.App
	topics map[string]string // subscription name → topic id, "" when unknown
}

func (r *resolver) resolve(ctx context.Context, m *pubsubpb.PubsubMessage) letter {
	l := letter{data: m.Data, attrs: map[string]string{}, published: m.PublishTime.AsTime()}
	for k, v := range m.Attributes {
		if !strings.HasPrefix(k, attrPolicyPrefix) {
			l.attrs[k] = v
		}
	}
	switch src := m.Attributes[attrSourceSub]; {
	case m.Attributes["entry_point"] != "":
		// phasegate's own copy of bad input.
		l.entryPoint, l.id, l.reason = m.Attributes["entry_point"], m.Attributes["original_message_id"], m.Attributes["reason"]
		for _, k := range []string{"reason", "entry_point", "original_message_id", "truncated"} {
			delete(l.attrs, k)
		}
		switch {
		case l.reason == "unparseable_envelope":
			l.skip = "the copy is the raw body, not a message"
		case m.Attributes["truncated"] == "true":
			l.skip = "the copy was truncated"
		}
	case src != "":
		// Forwarded by a subscription's dead-letter policy: the message as
		// it was published, under a new id.
		l.id, l.reason = m.MessageId, "delivery attempts exhausted on "+path.Base(src)
		name := src
		if !strings.HasPrefix(src, "projects/") {
			project := m.Attributes[attrSourceProject]
			if project == "" {
				project = r.a.Cfg.ProjectID
			}
			name = "projects/" + project + "/subscriptions/" + src
		}
		topic, ok := r.topics[name]
		if !ok {
			s, err := r.a.Bus.Client().SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: name})
			if err == nil {
				topic = path.Base(s.GetTopic())
			}
			r.topics[name] = topic
		}
		l.entryPoint = entryPointOf(r.a, topic)
		if l.entryPoint == "" {
			l.skip = fmt.Sprintf("source subscription %s: its topic %q feeds no phasegate entry point", name, topic)
		}
	default:
		l.id, l.skip = m.MessageId, "neither phasegate's copy nor forwarded by a dead-letter policy"
	}
	return l
}

// deliver hands l to its entry point's handler as a push delivery and
// returns the handler's status.
func (l letter) deliver(ctx context.Context, a *app.App) int {
	h, ok := a.Handler(l.entryPoint)
	if !ok {
		return http.StatusNotFound
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/"+l.entryPoint,
		bytes.NewReader(envelope.PushBody(l.id, l.data, l.attrs, l.published)))
	if err != nil {
		return http.StatusInternalServerError
	}
	req.Header.Set("Content-Type", "application/json")
	w := &statusWriter{header: http.Header{}, code: http.StatusOK}
	h.ServeHTTP(w, req)
	return w.code
}

// statusWriter keeps only a handler's status; its body is for Pub/Sub.
type statusWriter struct {
	header http.Header
	code   int
	wrote  bool
}

func (w *statusWriter) Header() http.Header { return w.header }
func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return len(b), nil
}
func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
}

// release hands messages back at once: listing or skipping must not
// consume them.
func release(ctx context.Context, a *app.App, sub string, ackIDs []string) error {
	if len(ackIDs) == 0 {
		return nil
	}
	return a.Bus.Client().SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{
		Subscription: subName(a, sub), AckIds: ackIDs, AckDeadlineSeconds: 0})
}

func pull(cmd *cobra.Command, a *app.App, sub string, max int32) ([]*pubsubpb.ReceivedMessage, error) {
	if max < 1 || max > 1000 {
		return nil, usagef("--max %d: want 1 to 1000", max)
	}
	if sub == "" {
		return nil, usagef("--subscription: name a pull subscription on the dead-letter topic")
	}
	// A pull waits for messages; an empty subscription answers only when
	// the deadline passes, which here means "none".
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	res, err := a.Bus.Client().SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
		Subscription: subName(a, sub), MaxMessages: max})
	if status.Code(err) == codes.DeadlineExceeded {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", sub, err)
	}
	return res.ReceivedMessages, nil
}

func subName(a *app.App, sub string) string {
	if strings.HasPrefix(sub, "projects/") {
		return sub
	}
	return "projects/" + a.Cfg.ProjectID + "/subscriptions/" + sub
}

// entryPointOf maps an input topic back to the entry point it feeds.
func entryPointOf(a *app.App, topic string) string {
	if topic == "" {
		return ""
	}
	for _, p := range a.Cfg.Phases {
		if p.InputTopic == topic {
			return p.EntryPoint
		}
	}
	switch topic {
	case a.Cfg.Topics.PredictionReady:
		return "PredictionCompletions"
	case a.Cfg.Topics.Sweep:
		return "Sweep"
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func preview(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ReplaceAll(s, "\n", " ")
}
