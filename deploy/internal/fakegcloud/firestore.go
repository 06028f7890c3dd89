package fakegcloud

import (
	"fmt"
	"slices"
	"strings"
)

// noDatabase answers a Firestore call in a project without a database, with
// the text the data and admin APIs give ("NOT_FOUND: The database (default)
// does not exist for project …", as quoted across Firebase set-up guides).
func (c *call) noDatabase() (int, bool) {
	if slices.Contains(c.s.Databases, "(default)") {
		return 0, false
	}
	return c.fail("NOT_FOUND", "The database (default) does not exist for project "+c.s.Project+
		" Please visit https://console.cloud.google.com/datastore/setup?project="+c.s.Project+
		" to add a Cloud Datastore or Cloud Firestore database."), true
}

func dbList(c *call) int {
	var out []map[string]any
	for _, d := range c.s.Databases {
		out = append(out, map[string]any{"name": "projects/" + c.s.Project + "/databases/" + d, "type": "FIRESTORE_NATIVE"})
	}
	return c.json(orEmpty(out))
}

func dbCreate(c *call) int {
	d := c.flag("--database")
	if slices.Contains(c.s.Databases, d) {
		return c.fail("ALREADY_EXISTS", "Database already exists. Please use another database_id")
	}
	c.s.Databases = append(c.s.Databases, d)
	return 0
}

// fieldOp runs one index or field operation on a collection group, as
// Firestore's admin API does: one at a time per collection group. While one
// runs (started with --async, or by someone else) another is refused with
// the contention error terraform-provider-google#16599 reports for index
// operations ("Error 409: Aborted due to cross-transaction contention"; the
// provider now retries it, magic-modules error_retry_predicates.go
// FirestoreIndex409Retry and DatastoreIndex409Contention "too much
// contention"). Without --async the call waits for its operation.
func (c *call) fieldOp(group string, op func() int) int {
	if code, missing := c.noDatabase(); missing {
		return code
	}
	if c.s.Busy[group] > 0 {
		c.s.Busy[group]--
		return c.fail("ABORTED", "Aborted due to cross-transaction contention. This occurs when multiple transactions "+
			"attempt to access the same data, requiring Firestore to abort at least one in order to enforce serializability.")
	}
	if code := op(); code != 0 {
		return code
	}
	if c.has("--async") {
		c.s.Busy[group] = c.s.Lag
		fmt.Fprintf(c.err, "Request issued for: [%s]\n", group)
	}
	return 0
}

func compositeList(c *call) int {
	if code, missing := c.noDatabase(); missing {
		return code
	}
	var out []map[string]any
	for i, ix := range c.s.Indexes {
		var fields []map[string]any
		last := "ASCENDING"
		for _, f := range ix.Fields {
			m := map[string]any{"fieldPath": f.Path}
			if f.Order != "" {
				m["order"], last = f.Order, f.Order
			} else {
				m["arrayConfig"] = f.ArrayConfig
			}
			fields = append(fields, m)
		}
		// The server appends __name__ in the last field's direction.
		fields = append(fields, map[string]any{"fieldPath": "__name__", "order": last})
		out = append(out, map[string]any{
			"name":       fmt.Sprintf("projects/%s/databases/(default)/collectionGroups/%s/indexes/CICAgJim%03d", c.s.Project, ix.Group, i),
			"queryScope": ix.Scope, "fields": fields, "state": "READY",
		})
	}
	return c.json(orEmpty(out))
}

func compositeCreate(c *call) int {
	ix := Index{Group: c.flag("--collection-group"), Scope: strings.ToUpper(strings.ReplaceAll(c.flag("--query-scope"), "-", "_"))}
	if ix.Scope == "" {
		ix.Scope = "COLLECTION"
	}
	for _, fc := range c.flags["--field-config"] {
		var f IndexField
		for kv := range strings.SplitSeq(fc, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "field-path":
				f.Path = v
			case "order":
				f.Order = strings.ToUpper(v)
			case "array-config":
				f.ArrayConfig = strings.ToUpper(v)
			}
		}
		ix.Fields = append(ix.Fields, f)
	}
	return c.fieldOp(ix.Group, func() int {
		for _, have := range c.s.Indexes {
			if have.Group == ix.Group && have.Scope == ix.Scope && slices.Equal(have.Fields, ix.Fields) {
				return c.fail("ALREADY_EXISTS", "index already exists")
			}
		}
		c.s.Indexes = append(c.s.Indexes, ix)
		return 0
	})
}

func (c *call) field(group, name string) *Field {
	key := group + "/" + name
	f, ok := c.s.Fields[key]
	if !ok {
		f = &Field{}
		c.s.Fields[key] = f
	}
	return f
}

func (c *call) fieldName(key string) string {
	g, f, _ := strings.Cut(key, "/")
	return "projects/" + c.s.Project + "/databases/(default)/collectionGroups/" + g + "/fields/" + f
}

// fieldsList lists the fields with index settings of their own
// (indexConfig.usesAncestorConfig:false), the database's default first.
func fieldsList(c *call) int {
	if code, missing := c.noDatabase(); missing {
		return code
	}
	out := []map[string]any{{
		"name": "projects/" + c.s.Project + "/databases/(default)/collectionGroups/__default__/fields/*",
		"indexConfig": map[string]any{"indexes": []any{
			map[string]any{"queryScope": "COLLECTION", "fields": []any{map[string]any{"fieldPath": "*", "order": "ASCENDING"}}, "state": "READY"},
			map[string]any{"queryScope": "COLLECTION", "fields": []any{map[string]any{"fieldPath": "*", "order": "DESCENDING"}}, "state": "READY"},
			map[string]any{"queryScope": "COLLECTION", "fields": []any{map[string]any{"fieldPath": "*", "arrayConfig": "CONTAINS"}}, "state": "READY"},
		}},
	}}
	for _, key := range sortedKeys(c.s.Fields) {
		f := c.s.Fields[key]
		if f.Indexes == nil {
			continue
		}
		out = append(out, c.fieldJSON(key, f))
	}
	return c.json(out)
}

func (c *call) fieldJSON(key string, f *Field) map[string]any {
	m := map[string]any{"name": c.fieldName(key)}
	if f.Indexes == nil {
		g, _, _ := strings.Cut(key, "/")
		m["indexConfig"] = map[string]any{"usesAncestorConfig": true,
			"ancestorField": "projects/" + c.s.Project + "/databases/(default)/collectionGroups/" + g + "/fields/*"}
	} else {
		_, name, _ := strings.Cut(key, "/")
		var idx []any
		for _, i := range *f.Indexes {
			fm := map[string]any{"fieldPath": name}
			if i.Order != "" {
				fm["order"] = i.Order
			} else {
				fm["arrayConfig"] = i.ArrayConfig
			}
			idx = append(idx, map[string]any{"queryScope": "COLLECTION", "fields": []any{fm}, "state": "READY"})
		}
		ic := map[string]any{}
		if idx != nil {
			ic["indexes"] = idx
		}
		m["indexConfig"] = ic
	}
	if f.TTL != "" {
		m["ttlConfig"] = map[string]any{"state": f.TTL}
	}
	return m
}

func fieldsUpdate(c *call) int {
	group, name := c.flag("--collection-group"), c.args[0]
	return c.fieldOp(group, func() int {
		f := c.field(group, name)
		switch {
		case c.has("--disable-indexes"):
			f.Indexes = &[]FieldIndex{}
		case c.has("--clear-exemption"):
			f.Indexes = nil
		case c.has("--index"):
			var idx []FieldIndex
			for _, v := range c.flags["--index"] {
				var i FieldIndex
				for kv := range strings.SplitSeq(v, ",") {
					k, val, _ := strings.Cut(kv, "=")
					switch k {
					case "order":
						i.Order = strings.ToUpper(val)
					case "array-config":
						i.ArrayConfig = strings.ToUpper(val)
					}
				}
				idx = append(idx, i)
			}
			f.Indexes = &idx
		default:
			return c.fail("INVALID_ARGUMENT", "one of --index, --disable-indexes, --clear-exemption is required")
		}
		c.tidy(group, name)
		return 0
	})
}

func ttlsList(c *call) int {
	if code, missing := c.noDatabase(); missing {
		return code
	}
	var out []map[string]any
	for _, key := range sortedKeys(c.s.Fields) {
		if f := c.s.Fields[key]; f.TTL != "" {
			out = append(out, c.fieldJSON(key, f))
		}
	}
	return c.json(orEmpty(out))
}

// ttlsUpdate sets or clears a field's TTL policy. Firestore allows one TTL
// field per collection group (https://cloud.google.com/firestore/docs/ttl,
// "You can mark only one field per collection group as a TTL field"; the
// CLI's own help: "Note that only one field can be the TTL field for a
// collection group"); the API's exact refusal text is not published, so
// this one is a stand-in and deploy.sh never matches on it.
func ttlsUpdate(c *call) int {
	group, name := c.flag("--collection-group"), c.args[0]
	return c.fieldOp(group, func() int {
		if c.has("--enable-ttl") {
			for key, f := range c.s.Fields {
				if g, other, _ := strings.Cut(key, "/"); g == group && other != name && f.TTL != "" {
					return c.fail("FAILED_PRECONDITION", fmt.Sprintf("Collection group %s already has a TTL policy on field %s; "+
						"only one field per collection group can be the TTL field.", group, other))
				}
			}
			c.field(group, name).TTL = "ACTIVE"
			if c.has("--async") {
				c.field(group, name).TTL = "CREATING"
			}
		} else {
			c.field(group, name).TTL = ""
		}
		c.tidy(group, name)
		return 0
	})
}

// tidy forgets a field with no settings of its own.
func (c *call) tidy(group, name string) {
	if f := c.s.Fields[group+"/"+name]; f != nil && f.Indexes == nil && f.TTL == "" {
		delete(c.s.Fields, group+"/"+name)
	}
}
