package main

import (
	"context"
	"fmt"
	"time"

	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/spf13/cobra"

	"github.com/phasegate/phasegate/internal/app"
)

func deadLettersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dead-letters",
		Short: "Inspect and replay messages copied to the dead-letter topic",
		Long: `Every message phasegate could not accept is copied to the dead-letter topic
(orchestrator-dead-letter) with attributes reason, entry_point and
original_message_id. Read them through a pull subscription on that topic.`,
	}
	var sub string
	var max int32
	list := &cobra.Command{
		Use:   "list --subscription NAME",
		Short: "Show dead letters without consuming them",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				msgs, err := pull(cmd, a, sub, max)
				if err != nil {
					return err
				}
				var ids []string
				for _, rm := range msgs {
					m := rm.Message
					fmt.Fprintf(cmd.OutOrStdout(), "%s  %-14s %-28s original=%s  %s\n", m.PublishTime.AsTime().Format("2006-01-02T15:04:05Z"),
						m.Attributes["entry_point"], m.Attributes["reason"], m.Attributes["original_message_id"], preview(m.Data))
					ids = append(ids, rm.AckId)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d dead letters shown\n", len(msgs))
				if len(ids) == 0 {
					return nil
				}
				// Hand them back at once: listing must not consume.
				return a.Bus.Client().SubscriptionAdminClient.ModifyAckDeadline(cmd.Context(), &pubsubpb.ModifyAckDeadlineRequest{
					Subscription: subName(a, sub), AckIds: ids, AckDeadlineSeconds: 0})
			})
		},
	}
	replay := &cobra.Command{
		Use:   "replay --subscription NAME",
		Short: "Publish dead letters back to their entry point's topic, then acknowledge them",
		Long: `Replay publishes each dead letter's original data and attributes (without
the dead-letter attributes) to the topic of the entry point it came from,
then acknowledges it. Use it after fixing the cause, such as a name map.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApp(cmd, operator(cmd), func(a *app.App) error {
				msgs, err := pull(cmd, a, sub, max)
				if err != nil {
					return err
				}
				n := 0
				for _, rm := range msgs {
					m := rm.Message
					topic := inputTopic(a, m.Attributes["entry_point"])
					if topic == "" || m.Attributes["reason"] == "unparseable_envelope" {
						fmt.Fprintf(cmd.OutOrStdout(), "skipped %s: cannot be replayed (%s)\n", m.Attributes["original_message_id"], m.Attributes["reason"])
						continue
					}
					attrs := map[string]string{}
					for k, v := range m.Attributes {
						switch k {
						case "reason", "entry_point", "original_message_id", "truncated":
						default:
							attrs[k] = v
						}
					}
					if _, err := a.Bus.Publish(cmd.Context(), topic, m.Data, attrs); err != nil {
						return err
					}
					if err := a.Bus.Client().SubscriptionAdminClient.Acknowledge(cmd.Context(), &pubsubpb.AcknowledgeRequest{
						Subscription: subName(a, sub), AckIds: []string{rm.AckId}}); err != nil {
						return err
					}
					n++
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d replayed\n", n)
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{list, replay} {
		c.Flags().StringVar(&sub, "subscription", "", "pull subscription on the dead-letter topic (id or full name)")
		c.Flags().Int32Var(&max, "max", 50, "at most this many messages")
		_ = c.MarkFlagRequired("subscription")
		c.Args = noArgs
	}
	cmd.AddCommand(list, replay)
	return cmd
}

func pull(cmd *cobra.Command, a *app.App, sub string, max int32) ([]*pubsubpb.ReceivedMessage, error) {
	if max < 1 || max > 1000 {
		return nil, usagef("--max %d: want 1 to 1000", max)
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

func inputTopic(a *app.App, entryPoint string) string {
	if p, ok := a.Cfg.Phase(entryPoint); ok {
		return p.InputTopic
	}
	switch entryPoint {
	case "PredictionCompletions":
		return a.Cfg.Topics.PredictionReady
	case "Sweep":
		return a.Cfg.Topics.Sweep
	}
	return ""
}

func preview(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ReplaceAll(s, "\n", " ")
}
