// Package fsclient opens phasegate's Firestore clients: the high-level one
// every package reads and writes with, and the low-level one the batch
// tracker sends its single-RPC commits through, both on one connection.
//
// On the emulator (FIRESTORE_EMULATOR_HOST) it dials the connection itself,
// with the credentials the client library uses there, so that dial options
// reach every RPC: the library would dial the emulator on its own and ignore
// them. Test kits add their interceptors (the index check's query recorder)
// by registering with Intercept from an init function; the deployed
// functions link no test kit, so in production nothing is registered.
package fsclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"cloud.google.com/go/firestore"
	vkit "cloud.google.com/go/firestore/apiv1"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	mu         sync.Mutex
	registered []func() []grpc.DialOption
)

// Intercept adds dial options to every emulator connection this process
// opens from now on. f is called at each dial.
func Intercept(f func() []grpc.DialOption) {
	mu.Lock()
	defer mu.Unlock()
	registered = append(registered, f)
}

func dialOptions() []grpc.DialOption {
	mu.Lock()
	defer mu.Unlock()
	var out []grpc.DialOption
	for _, f := range registered {
		out = append(out, f()...)
	}
	return out
}

// Conn dials the Firestore emulator at host with the client library's
// emulator credentials ("Bearer owner"), the registered interceptors, then
// opts.
func Conn(host string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	all := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(owner{})}, dialOptions()...)
	conn, err := grpc.NewClient(host, append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("fsclient: dial firestore at %s: %w", host, err)
	}
	return conn, nil
}

// Clients are the two clients of one project.
type Clients struct {
	FS   *firestore.Client
	Raw  *vkit.Client
	conn *grpc.ClientConn // ours to close on the emulator
}

// Open returns project's clients. opts come after Open's own, so a caller's
// option.WithGRPCConn (a test's counting connection) wins.
func Open(ctx context.Context, project string, opts ...option.ClientOption) (*Clients, error) {
	c := &Clients{}
	if host := os.Getenv("FIRESTORE_EMULATOR_HOST"); host != "" {
		conn, err := Conn(host)
		if err != nil {
			return nil, err
		}
		c.conn = conn
		opts = append([]option.ClientOption{option.WithGRPCConn(conn)}, opts...)
	}
	fs, err := firestore.NewClient(ctx, project, opts...)
	if err != nil {
		c.closeConn()
		return nil, fmt.Errorf("fsclient: firestore client: %w", err)
	}
	raw, err := vkit.NewClient(ctx, opts...)
	if err != nil {
		c.closeConn()
		return nil, errors.Join(fmt.Errorf("fsclient: low-level firestore client: %w", err), fs.Close())
	}
	c.FS, c.Raw = fs, raw
	return c, nil
}

// Close releases both clients and the connection.
func (c *Clients) Close() error {
	err := errors.Join(c.FS.Close(), c.Raw.Close())
	c.closeConn()
	return err
}

func (c *Clients) closeConn() {
	if c.conn != nil {
		_ = c.conn.Close() // may already be closed by a client's Close
	}
}

type owner struct{}

func (owner) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}

func (owner) RequireTransportSecurity() bool { return false }
