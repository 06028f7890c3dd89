package loadtest

import "testing"

// maxIn counts the most writes in any window of the given length: the
// window is half-open, so writes exactly one length apart fall in two.
func TestMaxIn(t *testing.T) {
	for _, c := range []struct {
		ts     []float64
		window float64
		want   int
	}{
		{nil, 1, 0},
		{[]float64{0.5}, 1, 1},
		{[]float64{0, 0.2, 0.9, 1.0, 1.1}, 1, 4},
		{[]float64{3, 0, 1, 2}, 1, 1},
		{[]float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9.99, 10}, 10, 11},
	} {
		if got := maxIn(c.ts, c.window); got != c.want {
			t.Errorf("maxIn(%v, %v) = %d, want %d", c.ts, c.window, got, c.want)
		}
	}
}
