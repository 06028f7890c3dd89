// Package docid turns arbitrary strings (a player_lookup can hold anything a
// name can) into Firestore document ids such that two distinct values never
// share an id. Values that are valid ids as they are stay readable.
package docid

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// Prefix starts every encoded id. It is outside base64url's alphabet, so an
// encoded id cannot be confused with a raw one (raw values starting with it
// are always encoded) nor with the other encoded form.
const Prefix = "~"

const maxIDBytes = 1500

// Encode returns a document id for s.
//
//   - s itself when Firestore accepts it and it does not start with Prefix;
//   - "~" + base64url(s) when that fits in 1,500 bytes;
//   - "~~" + hex(sha256(s)) otherwise.
func Encode(s string) string {
	if valid(s) {
		return s
	}
	if b := Prefix + base64.RawURLEncoding.EncodeToString([]byte(s)); len(b) <= maxIDBytes {
		return b
	}
	sum := sha256.Sum256([]byte(s))
	return Prefix + Prefix + hex.EncodeToString(sum[:])
}

func valid(s string) bool {
	switch {
	case s == "", s == ".", s == "..", len(s) > maxIDBytes, !utf8.ValidString(s),
		strings.HasPrefix(s, Prefix), strings.Contains(s, "/"),
		strings.HasPrefix(s, "__") && strings.HasSuffix(s, "__") && len(s) >= 4:
		return false
	}
	return true
}
