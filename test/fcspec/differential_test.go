package fcspec_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
	"github.com/oasdiff/yaml"
)

// request is one corpus entry.
type request struct {
	method, path string
	body         []byte
}

func (r request) String() string { return fmt.Sprintf("%s %s %s", r.method, r.path, r.body) }

// verdict is what a validator said, reduced to what a caller acts on.
func verdict(err error) string {
	switch {
	case err == nil:
		return "accepted"
	case errors.Is(err, fcspec.ErrUnknownPath):
		return "unknown path"
	case errors.Is(err, fcspec.ErrMethodNotAllowed):
		return "method not allowed"
	case errors.Is(err, fcspec.ErrInvalidRequest):
		return "invalid"
	}
	return "unclassified: " + err.Error()
}

// The compiled validator gives kin-openapi's verdict on every request of a
// corpus generated from the spec itself: for every operation a full and a
// minimal valid body, then every field removed, set to null and to each
// JSON type, numbers at and beyond their bounds and formats, enums off by
// one value, an unknown property at every object level, malformed and
// non-object bodies, path ids that differ from the body's, and every
// method on every path with and without trailing and extra segments.
// (Paths holding '?', '#' or '%' are left out: the reference re-parses the
// path as a URL, so it would judge another path than the one given.)
func TestDifferentialAgainstKinOpenAPI(t *testing.T) {
	compiled := loadForTest(t)
	reference := oas.LoadForTest(t)
	corpus := generateCorpus(t, oas.SpecPathForTest(t))

	counts := map[string]int{}
	var mismatches []string
	for _, r := range corpus {
		want := verdict(reference.ValidateRequest(r.method, r.path, r.body))
		gotErr := compiled.ValidateRequest(r.method, r.path, r.body)
		got := verdict(gotErr)
		counts[want]++
		if got != want {
			mismatches = append(mismatches, fmt.Sprintf("%s: kin-openapi %s, compiled %s (%v)", r, want, got, gotErr))
		}
	}
	t.Logf("%d requests: %v", len(corpus), counts)
	for _, m := range mismatches[:min(len(mismatches), 40)] {
		t.Error(m)
	}
	if len(mismatches) > 0 {
		t.Fatalf("%d of %d requests judged differently", len(mismatches), len(corpus))
	}
	// The corpus must exercise every verdict, or agreeing proves little.
	for _, v := range []string{"accepted", "unknown path", "method not allowed", "invalid"} {
		if counts[v] < 20 {
			t.Errorf("only %d requests are %q; the corpus is too thin", counts[v], v)
		}
	}
}

// specDoc is the spec decoded as plain JSON values, independently of both
// validators, to generate requests from.
type specDoc struct {
	paths map[string]any
	defs  map[string]any
}

func generateCorpus(t *testing.T, path string) []request {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	d := specDoc{}
	d.paths, _ = doc["paths"].(map[string]any)
	d.defs, _ = doc["definitions"].(map[string]any)

	var out []request
	allMethods := []string{"GET", "PUT", "PATCH", "POST", "DELETE"}
	for _, tmpl := range slices.Sorted(maps.Keys(d.paths)) {
		item, _ := d.paths[tmpl].(map[string]any)
		p := strings.NewReplacer("{drive_id}", "rootfs_1", "{iface_id}", "eth0", "{id}", "pm_0").Replace(tmpl)
		// Every method on every shape of the path, with no body and an
		// empty object: routing verdicts.
		for _, m := range allMethods {
			for _, shape := range pathShapes(tmpl, p) {
				out = append(out, request{m, shape, nil}, request{m, shape, []byte(`{}`)})
			}
		}
		for _, key := range slices.Sorted(maps.Keys(item)) {
			op, _ := item[key].(map[string]any)
			method := strings.ToUpper(key)
			bodySchema := d.bodySchema(op)
			if bodySchema == nil {
				out = append(out, request{method, p, []byte(`{"a":1}`)})
				continue
			}
			full := d.example(bodySchema, true)
			minimal := d.example(bodySchema, false)
			out = append(out, d.bodyCases(method, p, full)...)
			out = append(out, d.bodyCases(method, p, minimal)...)
			for _, raw := range []string{``, `null`, `[]`, `"x"`, `1`, `true`, `{`, `{"a":`, `{}`, `{} {}`, `{}x`, `{"a":1,"a":2}`} {
				out = append(out, request{method, p, []byte(raw)})
			}
			out = append(out, request{method, p, append(mustJSON(full), " trailing"...)})
			if id := pathID(tmpl); id != "" {
				mismatched := cloneJSON(full)
				if obj, ok := mismatched.(map[string]any); ok {
					obj[id] = "other"
					out = append(out, request{method, p, mustJSON(obj)})
				}
				// The path's own id in other shapes.
				for _, idv := range []string{"", "a-b", "a.b", "ä", strings.Repeat("x", 300)} {
					pp := strings.Replace(tmpl, "{"+id+"}", idv, 1)
					body := cloneJSON(full)
					if obj, ok := body.(map[string]any); ok {
						obj[id] = idv
					}
					out = append(out, request{method, pp, mustJSON(body)})
				}
			}
		}
	}
	return out
}

// pathShapes are path p as given and with the routing edge cases the
// router must agree on.
func pathShapes(tmpl, p string) []string {
	shapes := []string{p, p + "/", p + "//", p + "/extra", "/x" + p, strings.ToUpper(p)}
	if tmpl != p {
		shapes = append(shapes, tmpl) // the template's own text
	}
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		shapes = append(shapes, p[:i]+"/") // an empty last segment
	}
	return shapes
}

// bodyCases are the valid body and its mutations.
func (d specDoc) bodyCases(method, p string, valid any) []request {
	out := []request{{method, p, mustJSON(valid)}}
	for _, m := range d.mutations(valid) {
		out = append(out, request{method, p, mustJSON(m)})
	}
	return out
}

// mutations returns copies of v with one change each, at every depth.
func (d specDoc) mutations(v any) []any {
	var out []any
	replacements := []any{nil, true, false, "s", "", json.Number("0"), json.Number("1"), json.Number("-1"),
		json.Number("1.5"), json.Number("1.0"), json.Number("1e3"), json.Number("2147483647"), json.Number("2147483648"),
		json.Number("-2147483649"), json.Number("4294967296"), json.Number("9223372036854775807"),
		json.Number("9223372036854775808"), json.Number("18446744073709551616"), json.Number("1e400"),
		[]any{}, []any{"s"}, map[string]any{}, map[string]any{"zz": 1}}
	var walk func(path []any, cur any)
	walk = func(path []any, cur any) {
		switch c := cur.(type) {
		case map[string]any:
			out = append(out, setAt(v, path, withKey(c, "zz_unknown", "x")))
			for _, k := range slices.Sorted(maps.Keys(c)) {
				out = append(out, setAt(v, path, withoutKey(c, k)))
				for _, r := range replacements {
					out = append(out, setAt(v, append(slices.Clone(path), k), r))
				}
				for _, n := range numbersNear(c[k]) {
					out = append(out, setAt(v, append(slices.Clone(path), k), n))
				}
				if s, ok := c[k].(string); ok {
					out = append(out, setAt(v, append(slices.Clone(path), k), s+"x"), setAt(v, append(slices.Clone(path), k), strings.ToLower(s)))
				}
				walk(append(slices.Clone(path), k), c[k])
			}
		case []any:
			out = append(out, setAt(v, path, []any{}))
			for i := range c {
				for _, r := range replacements {
					out = append(out, setAt(v, append(slices.Clone(path), i), r))
				}
				walk(append(slices.Clone(path), i), c[i])
			}
		}
	}
	walk(nil, v)
	return out
}

// numbersNear are integers one either side of n.
func numbersNear(v any) []any {
	n, ok := v.(json.Number)
	if !ok {
		return nil
	}
	i, err := n.Int64()
	if err != nil {
		return nil
	}
	return []any{json.Number(fmt.Sprint(i - 1)), json.Number(fmt.Sprint(i + 1))}
}

// example builds a value schema s accepts: every property when full, only
// the required ones otherwise. Numbers sit on a bound when there is one, so
// numbersNear steps over it.
func (d specDoc) example(s map[string]any, full bool) any {
	s = d.resolve(s)
	if enum, ok := s["enum"].([]any); ok && len(enum) > 0 {
		return enum[0]
	}
	switch s["type"] {
	case "object", nil:
		props, _ := s["properties"].(map[string]any)
		if len(props) == 0 {
			if s["type"] == nil {
				return "any"
			}
			return map[string]any{"k": "v"}
		}
		required := map[string]bool{}
		for _, r := range asList(s["required"]) {
			required[r.(string)] = true
		}
		obj := map[string]any{}
		for _, k := range slices.Sorted(maps.Keys(props)) {
			if full || required[k] {
				ps, _ := props[k].(map[string]any)
				obj[k] = d.example(ps, full)
			}
		}
		return obj
	case "array":
		items, _ := s["items"].(map[string]any)
		return []any{d.example(items, full)}
	case "string":
		return "s1"
	case "boolean":
		return true
	case "integer":
		if m, ok := s["minimum"].(json.Number); ok {
			return m
		}
		if m, ok := s["maximum"].(json.Number); ok {
			return m
		}
		return json.Number("1")
	case "number":
		return json.Number("1.5")
	}
	return nil
}

func (d specDoc) resolve(s map[string]any) map[string]any {
	for s != nil {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		s, _ = d.defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
	}
	return map[string]any{}
}

func (d specDoc) bodySchema(op map[string]any) map[string]any {
	for _, p := range asList(op["parameters"]) {
		pm, _ := p.(map[string]any)
		if pm["in"] == "body" {
			s, _ := pm["schema"].(map[string]any)
			return s
		}
	}
	return nil
}

func pathID(tmpl string) string {
	i := strings.IndexByte(tmpl, '{')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(tmpl[i+1:], "}")
}

// setAt returns a deep copy of root with the value at path replaced.
func setAt(root any, path []any, val any) any {
	if len(path) == 0 {
		return cloneJSON(val)
	}
	c := cloneJSON(root)
	cur := c
	for i, step := range path {
		last := i == len(path)-1
		switch k := step.(type) {
		case string:
			m := cur.(map[string]any)
			if last {
				m[k] = cloneJSON(val)
			}
			cur = m[k]
		case int:
			a := cur.([]any)
			if last {
				a[k] = cloneJSON(val)
			}
			cur = a[k]
		}
	}
	return c
}

func withKey(m map[string]any, k string, v any) map[string]any {
	c := cloneJSON(m).(map[string]any)
	c[k] = v
	return c
}

func withoutKey(m map[string]any, k string) map[string]any {
	c := cloneJSON(m).(map[string]any)
	delete(c, k)
	return c
}

func cloneJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(v))
		for k, e := range v {
			c[k] = cloneJSON(e)
		}
		return c
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneJSON(e)
		}
		return c
	}
	return v
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// json.Number with an invalid literal cannot happen: every number
		// here is written out above.
		panic(err)
	}
	return b
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
