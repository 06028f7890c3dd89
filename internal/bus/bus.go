// Package bus publishes to Pub/Sub topics.
//
// It calls the Publish RPC directly instead of the bundling Publisher: a
// trigger is one message sent inside a request, and its effect must know,
// when the call returns, whether it was accepted. The bundler keeps retrying
// in the background after the caller's context ends, which would turn a
// "failed" publish into a second copy. For the same reason the RPC's own
// retries are switched off: the generated client retries Publish on
// Unavailable and DeadlineExceeded, and a publish that timed out after
// Pub/Sub accepted it would go out again unseen. Retries are the effect
// log's, which records an ambiguous try before it repeats one.
package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bus publishes messages to topics of one project.
type Bus struct {
	client  *pubsub.Client
	project string
	create  bool

	mu      sync.Mutex
	ensured map[string]bool
}

// New connects to Pub/Sub (the emulator when PUBSUB_EMULATOR_HOST is set).
// With createTopics, a topic is created on first use when missing, which is
// what a local run against the emulator needs; deploy scripts create them in
// production.
func New(ctx context.Context, project string, createTopics bool, opts ...option.ClientOption) (*Bus, error) {
	c, err := pubsub.NewClient(ctx, project, opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: connect: %w", err)
	}
	return &Bus{client: c, project: project, create: createTopics, ensured: map[string]bool{}}, nil
}

// Client exposes the underlying client for admin work (tests, tools).
func (b *Bus) Client() *pubsub.Client { return b.client }

// TopicName returns the full resource name of topic.
func (b *Bus) TopicName(topic string) string {
	return fmt.Sprintf("projects/%s/topics/%s", b.project, topic)
}

// Publish sends one message and returns its server-assigned id.
func (b *Bus) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) (string, error) {
	if b.create {
		if err := b.EnsureTopic(ctx, topic); err != nil {
			return "", err
		}
	}
	res, err := b.client.TopicAdminClient.Publish(ctx, &pubsubpb.PublishRequest{
		Topic:    b.TopicName(topic),
		Messages: []*pubsubpb.PubsubMessage{{Data: data, Attributes: attrs}},
	}, noRetry)
	if err != nil {
		return "", fmt.Errorf("bus: publish to %s: %w", topic, err)
	}
	if len(res.MessageIds) != 1 {
		return "", fmt.Errorf("bus: publish to %s: %d ids returned", topic, len(res.MessageIds))
	}
	return res.MessageIds[0], nil
}

// noRetry makes one Publish RPC one try.
var noRetry = gax.WithRetry(func() gax.Retryer { return nil })

// EnsureTopic creates topic unless it exists; it remembers topics it has seen.
func (b *Bus) EnsureTopic(ctx context.Context, topic string) error {
	b.mu.Lock()
	done := b.ensured[topic]
	b.mu.Unlock()
	if done {
		return nil
	}
	_, err := b.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: b.TopicName(topic)})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("bus: create topic %s: %w", topic, err)
	}
	b.mu.Lock()
	b.ensured[topic] = true
	b.mu.Unlock()
	return nil
}

// Close releases the connection.
func (b *Bus) Close() error {
	return errors.Join(b.client.Close())
}

// Subscription is a pull subscription: the tests' and the demo's stand-in
// for a downstream consumer of a topic.
type Subscription struct {
	b    *Bus
	name string
}

// Subscribe creates topic if missing and a new pull subscription id on it.
// Only messages published after this call are seen.
func (b *Bus) Subscribe(ctx context.Context, topic, id string) (*Subscription, error) {
	if err := b.EnsureTopic(ctx, topic); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("projects/%s/subscriptions/%s", b.project, id)
	// The shortest ack deadline Pub/Sub allows: a Pull that times out on
	// the caller's side after the server handed it messages (a loaded
	// machine) leaves them leased, and they come back only after it.
	_, err := b.client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: name, Topic: b.TopicName(topic), AckDeadlineSeconds: 10,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe to %s: %w", topic, err)
	}
	return &Subscription{b: b, name: name}, nil
}

// Drain pulls and acknowledges messages until quiet passes with none and
// returns them in arrival order.
func (s *Subscription) Drain(ctx context.Context, quiet time.Duration) ([]*pubsubpb.PubsubMessage, error) {
	var out []*pubsubpb.PubsubMessage
	for {
		pctx, cancel := context.WithTimeout(ctx, quiet)
		res, err := s.b.client.SubscriptionAdminClient.Pull(pctx, &pubsubpb.PullRequest{Subscription: s.name, MaxMessages: 1000})
		cancel()
		if err != nil || len(res.ReceivedMessages) == 0 {
			// A pull that times out is how the emulator says "nothing more".
			return out, nil
		}
		ids := make([]string, 0, len(res.ReceivedMessages))
		for _, rm := range res.ReceivedMessages {
			out = append(out, rm.Message)
			ids = append(ids, rm.AckId)
		}
		if err := s.b.client.SubscriptionAdminClient.Acknowledge(ctx,
			&pubsubpb.AcknowledgeRequest{Subscription: s.name, AckIds: ids}); err != nil {
			return out, fmt.Errorf("bus: ack: %w", err)
		}
	}
}
