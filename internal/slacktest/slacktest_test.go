package slacktest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, url, text string) *http.Response {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"text":"`+text+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestScriptThenDefault(t *testing.T) {
	s := New()
	defer s.Close()
	var onPost []string
	s.OnPost = func(p Post) { onPost = append(onPost, p.Text) }

	s.Script(Reply{Status: 429, RetryAfter: 3}, Reply{Status: 500})
	want := []struct {
		status     int
		retryAfter string
	}{{429, "3"}, {500, ""}, {200, ""}}
	for i, w := range want {
		resp := post(t, s.Hook("a"), "m")
		if resp.StatusCode != w.status || resp.Header.Get("Retry-After") != w.retryAfter {
			t.Errorf("request %d: %d Retry-After %q, want %d %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), w.status, w.retryAfter)
		}
	}

	// The default holds once the script runs out, and a script still comes
	// first.
	s.SetDefault(Reply{Status: 503})
	s.Script(Reply{Status: 200})
	for i, w := range []int{200, 503, 503} {
		if resp := post(t, s.Hook("b"), "n"); resp.StatusCode != w {
			t.Errorf("request %d after SetDefault: %d, want %d", i, resp.StatusCode, w)
		}
	}
	s.SetDefault(Reply{Status: 200, Delay: 50 * time.Millisecond})
	start := time.Now()
	if resp := post(t, s.Hook("c"), "late"); resp.StatusCode != 200 {
		t.Errorf("delayed default answered %d, want 200", resp.StatusCode)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("delayed default answered after %v, want at least 50ms", took)
	}

	posts := s.Posts()
	if len(posts) != 7 {
		t.Fatalf("%d posts, want 7", len(posts))
	}
	if p := posts[0]; p.Path != "/a" || p.Status != 429 || p.Text != "m" || p.Body["text"] != "m" {
		t.Errorf("first post = %+v", p)
	}
	if d := s.Delivered(); len(d) != 3 || d[0].Path != "/a" || d[1].Path != "/b" || d[2].Text != "late" {
		t.Errorf("delivered = %+v, want /a, /b and the late one", d)
	}
	s.Close() // waits for the handlers, and so for OnPost
	if len(onPost) != 3 {
		t.Errorf("OnPost called %d times, want 3 (the 200s)", len(onPost))
	}
}
