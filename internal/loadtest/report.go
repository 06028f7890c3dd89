package loadtest

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/phasegate/phasegate/internal/emulator"
)

// Floor records n players with one bare Create each from 100 senders in
// this process, straight to the emulator: the least work any design can do
// per completion, as `make bench-batch` measures it. The emulator is a
// JVM, so a first untimed round warms it up.
func Floor(ctx context.Context, n int) (float64, error) {
	if _, err := floor(ctx, min(n, 3000), "warm"); err != nil {
		return 0, err
	}
	return floor(ctx, n, "timed")
}

func floor(ctx context.Context, n int, name string) (float64, error) {
	project := fmt.Sprintf("lt-floor-%s-%d", name, time.Now().Unix())
	fs, err := emulator.NewFirestore(ctx, project)
	if err != nil {
		return 0, err
	}
	defer fs.Close()
	col := fs.Collection("prediction_batches").Doc("floor").Collection("completions")
	ch := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range 100 {
		wg.Go(func() {
			for i := range ch {
				if _, err := col.Doc(fmt.Sprintf("player-%06d", i)).Create(ctx, map[string]any{"player_lookup": i}); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Summary is the paced runs' latency, over every paced run.
type Summary struct {
	Runs     int     `json:"runs"`
	MedianMS float64 `json:"median_ms"`
	MaxMS    float64 `json:"max_ms"`
}

// Latency summarises paced results.
func Latency(rs []*Result) Summary {
	var ls []float64
	for _, r := range rs {
		if r.Paced && r.Messages > 0 {
			ls = append(ls, r.LatencyMS)
		}
	}
	if len(ls) == 0 {
		return Summary{}
	}
	sort.Float64s(ls)
	med := ls[len(ls)/2]
	if len(ls)%2 == 0 {
		med = (ls[len(ls)/2-1] + ls[len(ls)/2]) / 2
	}
	return Summary{Runs: len(ls), MedianMS: med, MaxMS: ls[len(ls)-1]}
}

// Table writes one line per result as a Markdown table.
func Table(w io.Writer, floor float64, rs []*Result) {
	fmt.Fprintln(w, "| run | K×C | players | completions/s | last completion → message | 5xx / 429 / dropped | Firestore RPCs / completion | hottest shard: max 1 s, per s over 10 s | batch document | gate document | shards | exact | RSS MiB |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	if floor > 0 {
		fmt.Fprintf(w, "| floor: one bare Create per player, in process, 100 senders | – | – | %.0f | – | – | – | 1 | – | – | – | – | – | – |\n", floor)
	}
	for _, r := range rs {
		pace := "unpaced"
		if r.Paced {
			pace = fmt.Sprintf("%.0f/s", float64(r.Players)/r.WindowSeconds)
		}
		lat := "–"
		if r.Messages > 0 && r.Paced {
			lat = fmt.Sprintf("%.0f ms", r.LatencyMS)
		}
		exact := "yes"
		if !r.Exact() {
			exact = fmt.Sprintf("NO: %d lost, %d messages %s", r.Lost, r.Messages, strings.Join(r.Problems, "; "))
		}
		var rss float64
		for _, m := range r.RSSMiB {
			rss = math.Max(rss, m)
		}
		fmt.Fprintf(w, "| %s (%s) | %d×%d | %d | %.0f | %s | %d / %d / %d | %.2f | %s | %s | %s | %d | %s | %.0f |\n",
			r.Name, pace, r.Instances, r.Concurrency, r.Players, r.PerSecond, lat, r.Status5xx, r.Refused429, r.ConnFailed, r.RPCsPerPlayer,
			hot(r.Hot["shard"]), hot(r.Hot["batch"]), hot(r.Hot["gate"]), r.Shards, exact, rss)
	}
}

func hot(h Hot) string {
	if h.Writes == 0 {
		return "–"
	}
	return fmt.Sprintf("%d, %.1f (%d writes)", h.Max1s, h.Max10s, h.Writes)
}

// Plot writes an SVG of writes per second (1 s bins) to the hottest shard,
// the batch document and the hottest gate document of r.
func Plot(path string, r *Result) error {
	const W, H, pad = 900.0, 320.0, 40.0
	colors := map[string]string{"shard": "#1f77b4", "batch": "#d62728", "gate": "#2ca02c"}
	var end float64
	series := map[string][]int{}
	for kind, h := range r.Hot {
		for name, ts := range r.writes {
			if shortDoc(name) != h.Doc {
				continue
			}
			for _, t := range ts {
				end = math.Max(end, t)
			}
			series[kind] = bins(ts)
		}
	}
	top := 1
	for _, s := range series {
		for _, v := range s {
			top = max(top, v)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="16">%s: writes per second per hot document (1 s bins)</text>`+"\n", pad, r.Name)
	x := func(t float64) float64 { return pad + (W-2*pad)*t/math.Max(end, 1) }
	y := func(v float64) float64 { return H - pad - (H-2*pad)*v/float64(top) }
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, pad, H-pad, W-pad, H-pad)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", pad, pad, pad, H-pad)
	for v := 0; v <= top; v += max(1, top/5) {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%d</text>`, pad-4, y(float64(v))+4, v)
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#999" stroke-dasharray="4"/>`+"\n", pad, y(1), W-pad, y(1))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%.0f s</text>`+"\n", W-pad, H-pad+16, end)
	ly := 34.0
	for _, kind := range []string{"shard", "batch", "gate"} {
		s, ok := series[kind]
		if !ok {
			continue
		}
		var pts []string
		for i, v := range s {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(i)+0.5), y(float64(v))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" points="%s"/>`+"\n", colors[kind], strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s %s</text>`+"\n", W-pad-320, ly, colors[kind], kind, r.Hot[kind].Doc)
		ly += 14
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func bins(ts []float64) []int {
	var out []int
	for _, t := range ts {
		i := int(t)
		for len(out) <= i {
			out = append(out, 0)
		}
		out[i]++
	}
	return out
}
