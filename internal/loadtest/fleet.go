package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/phasegate/phasegate/internal/emulator"
)

// Launcher says how to start one instance listening on a port.
type Launcher struct {
	Bin  string
	Args func(addr string) []string // arguments for listening on addr (host:port)
	Env  func(addr string) []string // environment beyond the parent's
	// Path is the URL path of an entry point: "/Name" for `phasegate
	// serve`, "/" for a buildpack binary serving one function.
	Path func(entryPoint string) string
}

// ServeLauncher starts `bin serve`.
func ServeLauncher(bin string) Launcher {
	return Launcher{Bin: bin,
		Args: func(addr string) []string { return []string{"serve", "--addr", addr} },
		Env:  func(string) []string { return nil },
		Path: func(ep string) string { return "/" + ep },
	}
}

// FunctionLauncher starts a buildpack-built binary serving one function.
func FunctionLauncher(bin, target string) Launcher {
	return Launcher{Bin: bin,
		Args: func(string) []string { return nil },
		Env: func(addr string) []string {
			_, port, _ := net.SplitHostPort(addr)
			return []string{"PORT=" + port, "FUNCTION_TARGET=" + target}
		},
		Path: func(string) string { return "/" },
	}
}

// Instance is one server process with Cloud Run's per-instance request
// limit in front of it.
type Instance struct {
	ID    int
	Addr  string
	slots chan struct{} // at most C requests at a time
	busy  atomic.Int64  // requests holding or waiting for a slot
	up    atomic.Bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  io.WriteCloser
}

// Fleet is K instances of one service.
type Fleet struct {
	L         Launcher
	Env       []string // common environment (project, emulators, settings)
	LogDir    string
	Name      string
	Instances []*Instance
}

// StartFleet starts k instances, each serving at most c requests at once,
// and waits until every one answers.
func StartFleet(ctx context.Context, l Launcher, env []string, logDir, name string, k, c int) (*Fleet, error) {
	f := &Fleet{L: l, Env: env, LogDir: logDir, Name: name}
	ports, err := emulator.FreePorts(k)
	if err != nil {
		return nil, err
	}
	for i, port := range ports {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		in := &Instance{ID: i, Addr: addr, slots: make(chan struct{}, c)}
		f.Instances = append(f.Instances, in)
	}
	var wg sync.WaitGroup
	errc := make(chan error, k)
	for _, in := range f.Instances {
		wg.Go(func() {
			if _, err := f.start(ctx, in); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

// start execs the instance's process and returns the time from exec until
// the port accepts connections.
func (f *Fleet) start(ctx context.Context, in *Instance) (time.Duration, error) {
	cmd := exec.Command(f.L.Bin, f.L.Args(in.Addr)...)
	cmd.Env = append(append(os.Environ(), f.Env...), f.L.Env(in.Addr)...)
	logf, err := os.OpenFile(fmt.Sprintf("%s/%s-%d.log", f.LogDir, f.Name, in.ID), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return 0, fmt.Errorf("start %s: %w", f.L.Bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	in.mu.Lock()
	in.cmd, in.done, in.log = cmd, done, logf
	in.mu.Unlock()
	for {
		conn, err := net.DialTimeout("tcp", in.Addr, 100*time.Millisecond)
		if err == nil {
			conn.Close()
			in.up.Store(true)
			return time.Since(t0), nil
		}
		select {
		case <-done:
			return 0, fmt.Errorf("instance %d exited before listening (see %s)", in.ID, logf.Name())
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(t0) > 60*time.Second {
			return 0, fmt.Errorf("instance %d not listening after 60 s", in.ID)
		}
	}
}

// Kill SIGKILLs instance i, as a crash would.
func (f *Fleet) Kill(i int) {
	in := f.Instances[i]
	in.up.Store(false)
	in.mu.Lock()
	cmd, done := in.cmd, in.done
	in.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts instance i again on its port, as Cloud Run replaces a
// crashed instance.
func (f *Fleet) Restart(ctx context.Context, i int) (time.Duration, error) {
	return f.start(ctx, f.Instances[i])
}

// RSS returns each live instance's resident memory in bytes.
func (f *Fleet) RSS() []int64 {
	var out []int64
	for _, in := range f.Instances {
		in.mu.Lock()
		cmd := in.cmd
		in.mu.Unlock()
		if cmd == nil || cmd.Process == nil {
			continue
		}
		out = append(out, rss(cmd.Process.Pid))
	}
	return out
}

func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// Stop ends every instance (SIGTERM, then SIGKILL after 10 s).
func (f *Fleet) Stop() {
	for _, in := range f.Instances {
		in.up.Store(false)
		in.mu.Lock()
		cmd, done, logf := in.cmd, in.done, in.log
		in.mu.Unlock()
		if cmd == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}
}

// pick chooses the live instance with the fewest requests, as Cloud Run's
// load balancer prefers idle instances.
func (f *Fleet) pick() *Instance {
	var best *Instance
	for _, in := range f.Instances {
		if !in.up.Load() {
			continue
		}
		if best == nil || in.busy.Load() < best.busy.Load() {
			best = in
		}
	}
	return best
}

// url is the address of an entry point on an instance.
func (f *Fleet) url(in *Instance, ep string) string { return "http://" + in.Addr + f.L.Path(ep) }

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000, MaxConnsPerHost: 0}, Timeout: 120 * time.Second}
