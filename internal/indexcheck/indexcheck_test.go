package indexcheck

import (
	"encoding/json"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
)

// Hand-built queries as the client library sends them.

func from(coll string) *firestorepb.StructuredQuery {
	return &firestorepb.StructuredQuery{From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: coll}}}
}

func group(coll string) *firestorepb.StructuredQuery {
	q := from(coll)
	q.From[0].AllDescendants = true
	return q
}

func where(q *firestorepb.StructuredQuery, f *firestorepb.StructuredQuery_Filter) *firestorepb.StructuredQuery {
	q.Where = f
	return q
}

func orderBy(q *firestorepb.StructuredQuery, field string, desc bool) *firestorepb.StructuredQuery {
	dir := firestorepb.StructuredQuery_ASCENDING
	if desc {
		dir = firestorepb.StructuredQuery_DESCENDING
	}
	q.OrderBy = append(q.OrderBy, &firestorepb.StructuredQuery_Order{
		Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: field}, Direction: dir})
	return q
}

func op(field string, o firestorepb.StructuredQuery_FieldFilter_Operator) *firestorepb.StructuredQuery_Filter {
	return &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{
		FieldFilter: &firestorepb.StructuredQuery_FieldFilter{Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: field}, Op: o}}}
}

func eq(f string) *firestorepb.StructuredQuery_Filter {
	return op(f, firestorepb.StructuredQuery_FieldFilter_EQUAL)
}
func gte(f string) *firestorepb.StructuredQuery_Filter {
	return op(f, firestorepb.StructuredQuery_FieldFilter_GREATER_THAN_OR_EQUAL)
}
func ne(f string) *firestorepb.StructuredQuery_Filter {
	return op(f, firestorepb.StructuredQuery_FieldFilter_NOT_EQUAL)
}
func in(f string) *firestorepb.StructuredQuery_Filter {
	return op(f, firestorepb.StructuredQuery_FieldFilter_IN)
}
func arrayContains(f string) *firestorepb.StructuredQuery_Filter {
	return op(f, firestorepb.StructuredQuery_FieldFilter_ARRAY_CONTAINS)
}

func isNotNull(f string) *firestorepb.StructuredQuery_Filter {
	return &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_UnaryFilter{
		UnaryFilter: &firestorepb.StructuredQuery_UnaryFilter{Op: firestorepb.StructuredQuery_UnaryFilter_IS_NOT_NULL,
			OperandType: &firestorepb.StructuredQuery_UnaryFilter_Field{Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: f}}}}}
}

func composite(o firestorepb.StructuredQuery_CompositeFilter_Operator, fs ...*firestorepb.StructuredQuery_Filter) *firestorepb.StructuredQuery_Filter {
	return &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_CompositeFilter{
		CompositeFilter: &firestorepb.StructuredQuery_CompositeFilter{Op: o, Filters: fs}}}
}

func and(fs ...*firestorepb.StructuredQuery_Filter) *firestorepb.StructuredQuery_Filter {
	return composite(firestorepb.StructuredQuery_CompositeFilter_AND, fs...)
}
func or(fs ...*firestorepb.StructuredQuery_Filter) *firestorepb.StructuredQuery_Filter {
	return composite(firestorepb.StructuredQuery_CompositeFilter_OR, fs...)
}

func file(t *testing.T, js string) *File {
	t.Helper()
	var f File
	if err := json.Unmarshal([]byte(js), &f); err != nil {
		t.Fatal(err)
	}
	return &f
}

// Each row is a query, an index file, and what the file lacks for it ("" when
// it serves the query), as the JSON the failure message tells one to add.
func TestMissing(t *testing.T) {
	const none = `{}`
	const openDesc = `{"indexes":[{"collectionGroup":"c","queryScope":"COLLECTION","fields":[
		{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"}]}]}`
	for _, c := range []struct {
		name  string
		q     *firestorepb.StructuredQuery
		index string
		want  string
	}{
		{"no filter", from("c"), none, ""},
		{"one equality", where(from("c"), eq("a")), none, ""},
		{"one inequality ordered by its field", orderBy(where(from("c"), gte("at")), "at", true), none, ""},
		{"order alone", orderBy(from("c"), "at", true), none, ""},
		{"equalities merge single-field indexes", where(from("c"), and(eq("a"), in("b"), eq("d"))), none, ""},
		{"equality and order", orderBy(where(from("c"), eq("open")), "at", true), none,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"}]}`},
		{"equality and order, indexed", orderBy(where(from("c"), eq("open")), "at", true), openDesc, ""},
		{"the sweep's shape: equality, inequality, order on it", orderBy(where(from("c"), and(eq("open"), gte("at"))), "at", true), openDesc, ""},
		{"inequality without order is ascending: a descending index does not serve it", where(from("c"), and(eq("open"), gte("at"))), openDesc,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"ASCENDING"}]}`},
		{"index of another collection", orderBy(where(from("d"), eq("open")), "at", true), openDesc,
			`{"collectionGroup":"d","queryScope":"COLLECTION","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"}]}`},
		{"collection-group query, collection index", orderBy(where(group("c"), eq("open")), "at", true), openDesc,
			`{"collectionGroup":"c","queryScope":"COLLECTION_GROUP","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"}]}`},
		{"collection-group query on one field: no automatic index", where(group("c"), eq("a")), none,
			`{"collectionGroup":"c","fieldPath":"a","indexes":[{"order":"ASCENDING","queryScope":"COLLECTION_GROUP"}]}`},
		{"collection-group query on one field, enabled", where(group("c"), eq("a")),
			`{"fieldOverrides":[{"collectionGroup":"c","fieldPath":"a","indexes":[{"order":"DESCENDING","queryScope":"COLLECTION_GROUP"}]}]}`, ""},
		{"single field disabled by an override", orderBy(from("c"), "n", false),
			`{"fieldOverrides":[{"collectionGroup":"c","fieldPath":"n","indexes":[]}]}`,
			`{"collectionGroup":"c","fieldPath":"n","indexes":[{"order":"ASCENDING","queryScope":"COLLECTION"}]}`},
		{"a TTL override keeps the field queryable when it lists the index", where(from("c"), gte("exp")),
			`{"fieldOverrides":[{"collectionGroup":"c","fieldPath":"exp","ttl":true,"indexes":[{"order":"ASCENDING","queryScope":"COLLECTION"}]}]}`, ""},
		{"two inequalities: ordered by name, ascending", where(from("c"), and(gte("b"), ne("a"))), none,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"a","order":"ASCENDING"},{"fieldPath":"b","order":"ASCENDING"}]}`},
		{"is not null is an inequality", orderBy(where(from("c"), and(eq("a"), isNotNull("b"))), "b", false), none,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"a","order":"ASCENDING"},{"fieldPath":"b","order":"ASCENDING"}]}`},
		{"array-contains with an equality", where(from("c"), and(arrayContains("tags"), eq("a"))), none,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"a","order":"ASCENDING"},{"fieldPath":"tags","arrayConfig":"CONTAINS"},{"fieldPath":"__name__","order":"ASCENDING"}]}`},
		{"explicit __name__ order against the last field's direction", orderBy(orderBy(where(from("c"), eq("open")), "at", true), "__name__", false), openDesc,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"},{"fieldPath":"__name__","order":"ASCENDING"}]}`},
		{"inequality with an explicit __name__ order: the field still comes first", orderBy(where(from("c"), and(eq("open"), gte("at"))), "__name__", true), none,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"}]}`},
		{"an index with more fields does not serve", orderBy(where(from("c"), eq("open")), "at", true),
			`{"indexes":[{"collectionGroup":"c","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"x","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"}]}]}`,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"DESCENDING"}]}`},
		{"OR: each branch on its own index", where(from("c"), or(eq("a"), and(eq("open"), gte("at")))), none,
			`{"collectionGroup":"c","queryScope":"COLLECTION","fields":[{"fieldPath":"open","order":"ASCENDING"},{"fieldPath":"at","order":"ASCENDING"}]}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := file(t, c.index)
			var got string
			for _, n := range Needs(c.q) {
				if add, _ := f.Missing(n); add != "" {
					got = add
				}
			}
			if got != c.want {
				t.Fatalf("missing:\n got %s\nwant %s", got, c.want)
			}
		})
	}
}
