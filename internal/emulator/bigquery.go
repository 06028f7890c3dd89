package emulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// BigQueryBinary is where `make bigquery-emulator` puts goccy's BigQuery
// emulator: $BIGQUERY_EMULATOR, else ~/.cache/phasegate/bigquery-emulator.
// It reports false when no binary is there.
func BigQueryBinary() (string, bool) {
	p := os.Getenv("BIGQUERY_EMULATOR")
	if p == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", false
		}
		p = filepath.Join(home, ".cache", "phasegate", "bigquery-emulator")
	}
	st, err := os.Stat(p)
	return p, err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// BigQuery is one running BigQuery emulator serving one project.
type BigQuery struct {
	Host    string // host:port of its REST API, the value of BIGQUERY_EMULATOR_HOST
	Project string
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
}

// StartBigQuery launches bin for project on free loopback ports and waits
// until GET /projects/{project}/datasets answers.
func StartBigQuery(ctx context.Context, bin, project, logDir string) (*BigQuery, error) {
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	httpPort, grpcPort := ports[0], ports[1]
	b := &BigQuery{Host: fmt.Sprintf("127.0.0.1:%d", httpPort), Project: project, exited: make(chan struct{})}
	b.cmd = exec.Command(bin, "--project="+project, "--host=127.0.0.1",
		fmt.Sprintf("--port=%d", httpPort), fmt.Sprintf("--grpc-port=%d", grpcPort))
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := io.Discard
	if logDir != "" {
		f, err := os.Create(filepath.Join(logDir, "bigquery-emulator-"+project+".log"))
		if err != nil {
			return nil, fmt.Errorf("emulator: %w", err)
		}
		out = f
	}
	b.cmd.Stdout, b.cmd.Stderr = out, out
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("emulator: start bigquery: %w", err)
	}
	go func() { b.exitErr = b.cmd.Wait(); close(b.exited) }()
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	url := "http://" + b.Host + "/projects/" + project + "/datasets"
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		req, _ := http.NewRequestWithContext(waitCtx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b, nil
			}
		}
		select {
		case <-b.exited:
			return nil, fmt.Errorf("emulator: bigquery exited before answering: %w", b.Died())
		case <-waitCtx.Done():
			b.Stop()
			return nil, fmt.Errorf("emulator: bigquery at %s did not answer: %w", b.Host, waitCtx.Err())
		case <-t.C:
		}
	}
}

// ErrDied says the emulator process is gone: a query crashed it. Callers
// report it as such rather than as the query's failure.
var ErrDied = errors.New("bigquery emulator died")

// Died returns nil while the emulator runs, else ErrDied with how it ended.
func (b *BigQuery) Died() error {
	select {
	case <-b.exited:
		return fmt.Errorf("%w: %v", ErrDied, b.exitErr)
	default:
		return nil
	}
}

// Stop ends the emulator.
func (b *BigQuery) Stop() {
	if b.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
	}
}
