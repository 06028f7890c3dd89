package docid

import (
	"strings"
	"testing"
)

func TestEncode(t *testing.T) {
	long := strings.Repeat("x", 1600)
	tests := []struct {
		in   string
		want string // "" means: must be encoded (differ from in)
	}{
		{"lebronjames", "lebronjames"},
		{"karl-anthony-towns", "karl-anthony-towns"},
		{"d'angelo.russell", "d'angelo.russell"},
		{"nikola_jokić", "nikola_jokić"},
		{"a/b", ""},
		{".", ""},
		{"..", ""},
		{"__id__", ""},
		{"~abc", ""},
		{"", ""},
		{long, ""},
	}
	for _, tt := range tests {
		got := Encode(tt.in)
		if tt.want != "" && got != tt.want {
			t.Errorf("Encode(%.20q) = %.40q, want %q", tt.in, got, tt.want)
		}
		if tt.want == "" && (got == tt.in || !strings.HasPrefix(got, Prefix)) {
			t.Errorf("Encode(%.20q) = %.40q, want an encoded id", tt.in, got)
		}
		if !valid(strings.TrimPrefix(got, Prefix)) && !strings.HasPrefix(got, Prefix) {
			t.Errorf("Encode(%.20q) = %.40q is not a valid id", tt.in, got)
		}
		if len(got) > maxIDBytes || strings.Contains(got, "/") {
			t.Errorf("Encode(%.20q) = %.40q cannot be a document id", tt.in, got)
		}
	}
}

func TestEncodeInjective(t *testing.T) {
	seen := map[string]string{}
	inputs := []string{"a/b", "a_b", "~YS9i", "YS9i", ".", "..", "~", "~~", strings.Repeat("y", 1600),
		strings.Repeat("y", 1601), strings.Repeat("é", 1100), "__x__", "_x_"}
	for _, in := range inputs {
		id := Encode(in)
		if prev, ok := seen[id]; ok {
			t.Fatalf("Encode(%.20q) and Encode(%.20q) share id %q", prev, in, id)
		}
		seen[id] = in
	}
}

func FuzzEncode(f *testing.F) {
	for _, s := range []string{"lebronjames", "a/b", "..", "~x", "__a__"} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := Encode(a), Encode(b)
		if a != b && ea == eb {
			t.Fatalf("collision: %q and %q → %q", a, b, ea)
		}
		if len(ea) == 0 || len(ea) > maxIDBytes || strings.Contains(ea, "/") || ea == "." || ea == ".." {
			t.Fatalf("Encode(%q) = %q is not a valid document id", a, ea)
		}
		if strings.HasPrefix(ea, "__") && strings.HasSuffix(ea, "__") {
			t.Fatalf("Encode(%q) = %q is reserved", a, ea)
		}
	})
}
