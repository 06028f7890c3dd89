// Package dedup names the idempotency keys kept in pubsub_deduplication.
//
// A key covers the content of an event, not only its Pub/Sub message id, so
// the same completion re-published under a new id counts once; the first
// message id is stored for operators. Keys are written by the caller in the
// same atomic commit as the state change they guard: an attempt that fails
// leaves no key, so its redelivery is processed (the running system wrote
// keys first and dropped such redeliveries as duplicates).
package dedup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/phasegate/phasegate/internal/config"
)

// Collection holds the keys (its shadow twin in shadow mode); a TTL policy
// on expires_at deletes them.
const Collection = "pubsub_deduplication"

// Keys builds key documents.
type Keys struct {
	fs    *firestore.Client
	cfg   config.Idempotency
	names config.Names
}

// New returns a key builder; cfg decides whether keys are on for a unit,
// names where they are kept.
func New(fs *firestore.Client, cfg config.Idempotency, names config.Names) *Keys {
	return &Keys{fs: fs, cfg: cfg, names: names}
}

// Collection is the collection the keys are kept in.
func (k *Keys) Collection() *firestore.CollectionRef {
	return k.fs.Collection(k.names.Coll(Collection))
}

// Enabled reports whether keys are on for unit (a game date or batch id).
func (k *Keys) Enabled(unit string) bool { return k != nil && k.cfg.Enabled.Enabled(unit) }

// ID is the document id of the key over parts: a hash, so any content is a
// valid id and the id's length is fixed.
func ID(kind string, parts ...string) string {
	// Each part is length-prefixed, so no content can shift the boundary
	// between two parts (a separator byte could appear inside one).
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, p := range append([]string{kind}, parts...) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write([]byte(p))
	}
	return kind + "-" + hex.EncodeToString(h.Sum(nil))[:40]
}

// Ref returns the key document for kind and parts.
func (k *Keys) Ref(kind string, parts ...string) *firestore.DocumentRef {
	return k.Collection().Doc(ID(kind, parts...))
}

// Record is the key document's content.
func (k *Keys) Record(messageID string, now time.Time) map[string]any {
	return map[string]any{
		"message_id":   messageID,
		"processed_at": now,
		"expires_at":   now.Add(k.cfg.TTL),
	}
}
