package loadtest

import (
	"bufio"
	"io"
	"net"
	"testing"
)

// The soak's Pub/Sub outage rests on the relay: a pause cuts the
// connections already open (gRPC keeps one for good) and refuses new ones,
// and a resume forwards again.
func TestRelayPauseCutsAndRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	r, err := StartRelay(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	echo := func(c net.Conn) error {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		_, err := bufio.NewReader(c).ReadString('\n')
		return err
	}
	open, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := echo(open); err != nil {
		t.Fatalf("before the pause: %v", err)
	}
	r.Pause()
	if _, err := io.ReadAll(open); err != nil {
		t.Fatalf("an open connection was not cut cleanly: %v", err)
	}
	refused, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	if err := echo(refused); err == nil {
		t.Fatal("a connection made during the pause was forwarded")
	}
	r.Resume()
	again, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := echo(again); err != nil {
		t.Fatalf("after the resume: %v", err)
	}
}
