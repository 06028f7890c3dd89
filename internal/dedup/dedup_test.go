package dedup

import "testing"

func TestIDDistinguishesParts(t *testing.T) {
	a := ID("completion", "ab", "c")
	b := ID("completion", "a", "bc")
	c := ID("worker", "ab", "c")
	d, e := ID("worker", "B", "p\x00q"), ID("worker", "B\x00p", "q")
	if a == b || a == c || b == c || d == e {
		t.Fatalf("ids collide: %s %s %s %s %s", a, b, c, d, e)
	}
	if a != ID("completion", "ab", "c") {
		t.Fatal("ID is not stable")
	}
}
