// Package indexcheck proves that every Firestore query phasegate sends has
// the index production needs. The emulator answers any query, indexed or
// not; production Firestore fails a query whose composite index is missing
// (FAILED_PRECONDITION). So a gRPC interceptor records the shape of every
// structured query the tests send, and Check compares the shapes with
// deploy/firestore.indexes.json — the file deploy.sh applies — by
// Firestore's own rules:
//
//   - Every query is ordered: its explicit orders, then each field of an
//     inequality filter not yet ordered (by name, in the direction of the last
//     order, ascending without one), then __name__ in that direction.
//   - One field (filtered, ordered or both), or equality filters alone, are
//     served by the automatic single-field indexes of a collection's scope
//     (equality filters by merging them), unless a field override disabled
//     the one needed. Collection-group queries have no automatic single-field
//     index: a field override must enable it.
//   - Anything else needs a composite index of the same collection group and
//     scope: the equality (and array-contains) fields first, in any order,
//     then exactly the query's orders and directions, and __name__ last in the
//     direction of the last order (an index without __name__ gets it in the
//     direction of its last field, ascending after an array field).
package indexcheck

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
)

// File is deploy/firestore.indexes.json, in the Firebase CLI's format that
// deploy.sh reads.
type File struct {
	Indexes        []Index         `json:"indexes"`
	FieldOverrides []FieldOverride `json:"fieldOverrides"`
}

// Index is one composite index.
type Index struct {
	CollectionGroup string       `json:"collectionGroup"`
	QueryScope      string       `json:"queryScope,omitempty"`
	Fields          []IndexField `json:"fields"`
}

// IndexField is one field of an index: an order or an array config.
type IndexField struct {
	FieldPath   string `json:"fieldPath,omitempty"`
	Order       string `json:"order,omitempty"`
	ArrayConfig string `json:"arrayConfig,omitempty"`
	QueryScope  string `json:"queryScope,omitempty"` // in a field override's indexes only
}

// FieldOverride replaces a field's automatic single-field indexes with its
// own list (empty: none).
type FieldOverride struct {
	CollectionGroup string       `json:"collectionGroup"`
	FieldPath       string       `json:"fieldPath"`
	TTL             bool         `json:"ttl,omitempty"`
	Indexes         []IndexField `json:"indexes"`
}

// Scopes and orders as the index file spells them.
const (
	Collection      = "COLLECTION"
	CollectionGroup = "COLLECTION_GROUP"
	Asc             = "ASCENDING"
	Desc            = "DESCENDING"
	Contains        = "CONTAINS"
	name            = "__name__"
)

// Load reads an index file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("indexcheck: %w", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("indexcheck: %s: %w", path, err)
	}
	return &f, nil
}

// Need is what one query (one branch of an OR) asks of the indexes.
type Need struct {
	CollectionGroup string
	Scope           string
	Equal           []string // equality fields (==, in, is null, is NaN), sorted
	Contains        string   // the array-contains(-any) field, if any
	Orders          []IndexField
	NameOrder       string // the direction __name__ is ordered in
}

// Needs returns what q asks of the indexes: one Need per branch of its
// filter in disjunctive normal form (an OR query runs each branch on its own
// index).
func Needs(q *firestorepb.StructuredQuery) []Need {
	var out []Need
	for _, from := range q.GetFrom() {
		scope := Collection
		if from.GetAllDescendants() {
			scope = CollectionGroup
		}
		for _, conj := range dnf(q.GetWhere()) {
			out = append(out, need(from.GetCollectionId(), scope, conj, q.GetOrderBy()))
		}
	}
	return out
}

// term is one field condition: equality, array-contains or inequality.
type term struct {
	field string
	kind  int
}

const (
	equal = iota
	contains
	inequal
)

// dnf flattens a filter into a disjunction of conjunctions.
func dnf(f *firestorepb.StructuredQuery_Filter) [][]term {
	switch {
	case f == nil:
		return [][]term{nil}
	case f.GetFieldFilter() != nil:
		ff := f.GetFieldFilter()
		k := inequal
		switch ff.GetOp() {
		case firestorepb.StructuredQuery_FieldFilter_EQUAL, firestorepb.StructuredQuery_FieldFilter_IN:
			k = equal
		case firestorepb.StructuredQuery_FieldFilter_ARRAY_CONTAINS, firestorepb.StructuredQuery_FieldFilter_ARRAY_CONTAINS_ANY:
			k = contains
		}
		return [][]term{{{ff.GetField().GetFieldPath(), k}}}
	case f.GetUnaryFilter() != nil:
		uf := f.GetUnaryFilter()
		k := inequal
		switch uf.GetOp() {
		case firestorepb.StructuredQuery_UnaryFilter_IS_NULL, firestorepb.StructuredQuery_UnaryFilter_IS_NAN:
			k = equal
		}
		return [][]term{{{uf.GetField().GetFieldPath(), k}}}
	}
	cf := f.GetCompositeFilter()
	if cf.GetOp() == firestorepb.StructuredQuery_CompositeFilter_OR {
		var out [][]term
		for _, sub := range cf.GetFilters() {
			out = append(out, dnf(sub)...)
		}
		return out
	}
	out := [][]term{nil}
	for _, sub := range cf.GetFilters() {
		var next [][]term
		for _, left := range out {
			for _, right := range dnf(sub) {
				next = append(next, append(slices.Clone(left), right...))
			}
		}
		out = next
	}
	return out
}

func need(coll, scope string, conj []term, orderBy []*firestorepb.StructuredQuery_Order) Need {
	n := Need{CollectionGroup: coll, Scope: scope}
	ordered := map[string]bool{}
	last := Asc
	for _, o := range orderBy {
		dir := Asc
		if o.GetDirection() == firestorepb.StructuredQuery_DESCENDING {
			dir = Desc
		}
		last = dir
		f := o.GetField().GetFieldPath()
		if f == name {
			n.NameOrder = dir // always last, whatever follows it
			continue
		}
		ordered[f] = true
		n.Orders = append(n.Orders, IndexField{FieldPath: f, Order: dir})
	}
	eq := map[string]bool{}
	var ineq []string
	for _, t := range conj {
		switch {
		case t.field == name: // every index ends with the document name
		case t.kind == equal:
			eq[t.field] = true
		case t.kind == contains:
			n.Contains = t.field
		case !ordered[t.field] && !slices.Contains(ineq, t.field):
			ineq = append(ineq, t.field)
		}
	}
	sort.Strings(ineq)
	for _, f := range ineq {
		n.Orders = append(n.Orders, IndexField{FieldPath: f, Order: last})
	}
	if n.NameOrder == "" {
		n.NameOrder = last
	}
	// Ordering by a field that an equality fixes orders nothing.
	n.Orders = slices.DeleteFunc(n.Orders, func(o IndexField) bool { return eq[o.FieldPath] })
	for f := range eq {
		n.Equal = append(n.Equal, f)
	}
	sort.Strings(n.Equal)
	return n
}

// fields are the distinct fields n touches.
func (n Need) fields() []string {
	fs := slices.Clone(n.Equal)
	if n.Contains != "" {
		fs = append(fs, n.Contains)
	}
	for _, o := range n.Orders {
		fs = append(fs, o.FieldPath)
	}
	return fs
}

// String describes n for a failure message.
func (n Need) String() string {
	var parts []string
	for _, f := range n.Equal {
		parts = append(parts, f+" ==")
	}
	if n.Contains != "" {
		parts = append(parts, n.Contains+" array-contains")
	}
	for _, o := range n.Orders {
		parts = append(parts, "order by "+o.FieldPath+" "+o.Order)
	}
	s := n.CollectionGroup
	if n.Scope == CollectionGroup {
		s += " (collection group)"
	}
	if len(parts) == 0 {
		return s
	}
	return s + ": " + strings.Join(parts, ", ")
}

// Missing returns what f lacks for n as the JSON to add and the list to
// add it to ("indexes" or "fieldOverrides"); "" when f serves n.
func (f *File) Missing(n Need) (add string, where string) {
	fields := n.fields()
	single := len(fields) == 1 || (len(n.Orders) == 0 && n.Contains == "" && n.Scope == Collection)
	if len(fields) == 0 {
		return "", ""
	}
	if single {
		var missing []string
		for _, fld := range fields {
			if ov := f.singleField(n, fld); ov != nil {
				missing = append(missing, jsonOf(ov))
			}
		}
		if len(missing) == 0 {
			return "", ""
		}
		return strings.Join(missing, ",\n"), "fieldOverrides"
	}
	for _, ix := range f.Indexes {
		if ix.serves(n) {
			return "", ""
		}
	}
	return jsonOf(n.index()), "indexes"
}

// singleField returns the override to add when fld's single-field index
// for n is not there: disabled by an override, or a collection group's,
// which is never automatic.
func (f *File) singleField(n Need, fld string) *FieldOverride {
	mode := IndexField{Order: Asc, QueryScope: n.Scope}
	switch {
	case fld == n.Contains:
		mode = IndexField{ArrayConfig: Contains, QueryScope: n.Scope}
	default:
		for _, o := range n.Orders {
			if o.FieldPath == fld {
				mode.Order = o.Order
			}
		}
	}
	equalOnly := slices.Contains(n.Equal, fld)
	var ov *FieldOverride
	for i := range f.FieldOverrides {
		if f.FieldOverrides[i].CollectionGroup == n.CollectionGroup && f.FieldOverrides[i].FieldPath == fld {
			ov = &f.FieldOverrides[i]
		}
	}
	if ov == nil {
		if n.Scope == Collection {
			return nil // automatic
		}
		return &FieldOverride{CollectionGroup: n.CollectionGroup, FieldPath: fld, Indexes: []IndexField{mode}}
	}
	for _, ix := range ov.Indexes {
		scope := ix.QueryScope
		if scope == "" {
			scope = Collection
		}
		if scope != n.Scope {
			continue
		}
		if ix.ArrayConfig == mode.ArrayConfig && (ix.Order == mode.Order || (equalOnly && ix.Order != "")) {
			return nil
		}
	}
	fixed := *ov
	fixed.Indexes = append(slices.Clone(ov.Indexes), mode)
	return &fixed
}

// serves reports whether ix is a composite index that answers n.
func (ix Index) serves(n Need) bool {
	scope := ix.QueryScope
	if scope == "" {
		scope = Collection
	}
	if ix.CollectionGroup != n.CollectionGroup || scope != n.Scope {
		return false
	}
	fields := ix.Fields
	nameOrder := Asc
	if len(fields) > 0 && fields[len(fields)-1].Order != "" {
		nameOrder = fields[len(fields)-1].Order
	}
	if len(fields) > 0 && fields[len(fields)-1].FieldPath == name {
		nameOrder = fields[len(fields)-1].Order
		fields = fields[:len(fields)-1]
	}
	k := len(n.Equal)
	if n.Contains != "" {
		k++
	}
	if len(fields) != k+len(n.Orders) || nameOrder != n.NameOrder {
		return false
	}
	prefix := map[string]IndexField{}
	for _, fl := range fields[:k] {
		prefix[fl.FieldPath] = fl
	}
	for _, e := range n.Equal {
		if fl, ok := prefix[e]; !ok || fl.Order == "" {
			return false
		}
	}
	if n.Contains != "" {
		if fl, ok := prefix[n.Contains]; !ok || fl.ArrayConfig != Contains {
			return false
		}
	}
	for i, o := range n.Orders {
		if fields[k+i].FieldPath != o.FieldPath || fields[k+i].Order != o.Order {
			return false
		}
	}
	return true
}

// index is the composite index that serves n.
func (n Need) index() Index {
	ix := Index{CollectionGroup: n.CollectionGroup, QueryScope: n.Scope}
	for _, e := range n.Equal {
		ix.Fields = append(ix.Fields, IndexField{FieldPath: e, Order: Asc})
	}
	if n.Contains != "" {
		ix.Fields = append(ix.Fields, IndexField{FieldPath: n.Contains, ArrayConfig: Contains})
	}
	ix.Fields = append(ix.Fields, n.Orders...)
	if last := ix.Fields[len(ix.Fields)-1]; last.Order != n.NameOrder {
		ix.Fields = append(ix.Fields, IndexField{FieldPath: name, Order: n.NameOrder})
	}
	return ix
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
