// Package emulator starts the official Google Cloud Firestore and Pub/Sub
// emulators that ship with the Cloud SDK, for tests and the demo. It waits
// until both answer and stops them (and their JVMs) on Stop.
package emulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"

	"github.com/phasegate/phasegate/internal/fsclient"
	"github.com/phasegate/phasegate/internal/indexcheck"
)

// Emulators is a running pair.
type Emulators struct {
	FirestoreHost string // host:port, the value of FIRESTORE_EMULATOR_HOST
	PubSubHost    string // host:port, the value of PUBSUB_EMULATOR_HOST
	procs         []*exec.Cmd
}

// SDKRoot finds the Cloud SDK: $CLOUDSDK_ROOT_DIR, then the Debian package's
// place, then next to the gcloud on PATH.
func SDKRoot() (string, error) {
	cands := []string{os.Getenv("CLOUDSDK_ROOT_DIR"), "/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk"}
	if p, err := exec.LookPath("gcloud"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			cands = append(cands, filepath.Dir(filepath.Dir(real)))
		}
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(c, "platform", "cloud-firestore-emulator")); err == nil {
			return c, nil
		}
	}
	return "", errors.New("emulator: Cloud SDK with the Firestore emulator not found " +
		"(looked in $CLOUDSDK_ROOT_DIR, /usr/lib/google-cloud-sdk, /usr/share/google-cloud-sdk and beside gcloud); " +
		"install the google-cloud-cli-firestore-emulator and google-cloud-cli-pubsub-emulator components")
}

// Start launches both emulators on free loopback ports and waits until they
// answer HTTP. Their output goes to logDir (when not empty) for debugging.
func Start(ctx context.Context, logDir string) (*Emulators, error) {
	root, err := SDKRoot()
	if err != nil {
		return nil, err
	}
	fsBin := filepath.Join(root, "platform", "cloud-firestore-emulator", "cloud_firestore_emulator")
	psBin := filepath.Join(root, "platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
	for _, b := range []string{fsBin, psBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("emulator: launcher missing: %w", err)
		}
	}
	if _, err := exec.LookPath("java"); err != nil {
		return nil, errors.New("emulator: java not on PATH; the emulators need Java 17 or later")
	}
	e := &Emulators{}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	fsPort, psPort := ports[0], ports[1]
	e.FirestoreHost = fmt.Sprintf("127.0.0.1:%d", fsPort)
	e.PubSubHost = fmt.Sprintf("127.0.0.1:%d", psPort)
	if err := e.launch(fsBin, logDir, "firestore", "--host=127.0.0.1", fmt.Sprintf("--port=%d", fsPort)); err != nil {
		return nil, err
	}
	if err := e.launch(psBin, logDir, "pubsub", "--host=127.0.0.1", fmt.Sprintf("--port=%d", psPort)); err != nil {
		e.Stop()
		return nil, err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, h := range []string{e.FirestoreHost, e.PubSubHost} {
		if err := waitReady(waitCtx, h); err != nil {
			e.Stop()
			return nil, fmt.Errorf("emulator at %s did not answer: %w", h, err)
		}
	}
	return e, nil
}

// PubSub is one Pub/Sub emulator on a port of the caller's choosing, so
// that it can be stopped and started again where its clients expect it, as
// a soak test does to model a Pub/Sub outage.
type PubSub struct {
	Host string // host:port
	e    *Emulators
}

// StartPubSub launches the Pub/Sub emulator on port and waits until it
// answers. Its output goes to logDir/NAME-emulator.log when logDir is not
// empty.
func StartPubSub(ctx context.Context, logDir, name string, port int) (*PubSub, error) {
	root, err := SDKRoot()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(root, "platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
	p := &PubSub{Host: fmt.Sprintf("127.0.0.1:%d", port), e: &Emulators{}}
	if err := p.e.launch(bin, logDir, name, "--host=127.0.0.1", fmt.Sprintf("--port=%d", port)); err != nil {
		return nil, err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitReady(waitCtx, p.Host); err != nil {
		p.Stop()
		return nil, fmt.Errorf("emulator: pubsub at %s did not answer: %w", p.Host, err)
	}
	return p, nil
}

// Stop kills the emulator and its JVM; everything it held is gone.
func (p *PubSub) Stop() { p.e.Stop() }

func (e *Emulators) launch(bin, logDir, name string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := io.Discard
	if logDir != "" {
		f, err := os.Create(filepath.Join(logDir, name+"-emulator.log"))
		if err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
		out = f
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("emulator: start %s: %w", name, err)
	}
	e.procs = append(e.procs, cmd)
	return nil
}

// Env returns the variables that point the Google client libraries at e.
func (e *Emulators) Env() []string {
	return []string{"FIRESTORE_EMULATOR_HOST=" + e.FirestoreHost, "PUBSUB_EMULATOR_HOST=" + e.PubSubHost}
}

// Stop kills both emulators' process groups: the launchers are scripts that
// start a JVM, which would otherwise outlive them.
func (e *Emulators) Stop() {
	for _, c := range e.procs {
		if c.Process == nil {
			continue
		}
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
	}
	for _, c := range e.procs {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	e.procs = nil
}

// FreePorts returns n distinct free loopback ports, for a process about to
// listen on them.
func FreePorts(n int) ([]int, error) {
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("emulator: find a free port: %w", err)
		}
		defer l.Close() // held until all are chosen, so they differ
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// waitReady polls the emulator's HTTP root, which answers "Ok" once it
// serves requests.
func waitReady(ctx context.Context, host string) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.HasPrefix(strings.TrimSpace(string(b)), "Ok") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func init() {
	// Every Firestore connection a binary that links this package opens on
	// the emulator records its queries when PHASEGATE_QUERY_LOG names a
	// file: the tests prove each query has its index.
	fsclient.Intercept(indexcheck.DialOptions)
}

// FirestoreConn dials the Firestore emulator at host with the credentials the
// client library itself uses there ("Bearer owner"), for code that needs its
// own connection: a test's counting or failing interceptors.
func FirestoreConn(host string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return fsclient.Conn(host, opts...)
}

// NewFirestore creates a Firestore client as firestore.NewClient does, but on
// the emulator through FirestoreConn, so that the index check sees its
// queries (the client library dials the emulator itself and would ignore
// dial options).
func NewFirestore(ctx context.Context, project string, opts ...option.ClientOption) (*firestore.Client, error) {
	if host := os.Getenv("FIRESTORE_EMULATOR_HOST"); host != "" {
		conn, err := FirestoreConn(host)
		if err != nil {
			return nil, err
		}
		opts = append([]option.ClientOption{option.WithGRPCConn(conn)}, opts...)
	}
	return firestore.NewClient(ctx, project, opts...)
}
