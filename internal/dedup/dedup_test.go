package dedup

import "testing"

func TestIDDistinguishesParts(t *testing.T) {
	a := ID("completion", "ab", "c")
	b := ID("completion", "a", "bc")
	c := ID("worker", "ab", "c")
	if a == b || a == c || b == c {
		t.Fatalf("ids collide: %s %s %s", a, b, c)
	}
	if a != ID("completion", "ab", "c") {
		t.Fatal("ID is not stable")
	}
}
