package fcspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/oasdiff/yaml"
)

// table is a spec compiled to what request validation needs: one route per
// (method, path) with its path parameters and body schema, and a flat list
// of schemas the routes and each other refer to by index. It is what the
// cache stores: decoding it is a small fraction of parsing the YAML.
type table struct {
	Version string   `json:"version"`
	Routes  []route  `json:"routes"`
	Schemas []schema `json:"schemas"`
}

type route struct {
	Method   string  `json:"method"`
	Template string  `json:"template"`
	Params   []param `json:"params,omitempty"`
	Body     *body   `json:"body,omitempty"`
}

type param struct {
	Name     string `json:"name"`
	Required bool   `json:"required,omitempty"`
	Schema   int    `json:"schema"`
}

type body struct {
	Required bool `json:"required,omitempty"`
	Schema   int  `json:"schema"`
}

// Values of schema.Extra: what an object does with properties it does not
// declare. extraSchema means "allowed, and each must match ExtraSchema".
const (
	extraUnset   = ""
	extraAllowed = "allowed"
	extraDenied  = "denied"
	extraSchema  = "schema"
)

// schema is the part of a Swagger 2.0 schema object Firecracker's spec
// uses. Compile refuses any other validation keyword, so a later spec that
// starts using one fails loudly instead of being checked less than the
// reference validator checks it.
type schema struct {
	Type        string         `json:"type,omitempty"` // empty: any type
	Format      string         `json:"format,omitempty"`
	Enum        []any          `json:"enum,omitempty"`
	Min         *float64       `json:"min,omitempty"`
	Max         *float64       `json:"max,omitempty"`
	Required    []string       `json:"required,omitempty"`
	Properties  map[string]int `json:"properties,omitempty"`
	Extra       string         `json:"extra,omitempty"`
	ExtraSchema int            `json:"extra_schema,omitempty"`
	Items       *int           `json:"items,omitempty"`
	// Empty marks a schema equivalent to {} (any value but null).
	Empty bool `json:"empty,omitempty"`
}

// annotations are schema keywords that do not affect validation here:
// defaults are never applied to requests (Firecracker applies its own).
var annotations = []string{"description", "default", "example", "title"}

// compiler turns the decoded spec into a table. Definitions are compiled
// once each and referred to by index.
type compiler struct {
	defs  map[string]any
	index map[string]int // definition name -> schema index
	t     *table
}

// compile reads a Swagger 2.0 document (YAML or JSON) into a table.
func compile(raw []byte) (*table, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if v, _ := doc["swagger"].(string); v != "2.0" {
		return nil, fmt.Errorf("want a Swagger 2.0 document, got swagger %q", v)
	}
	if bp, ok := doc["basePath"].(string); ok && bp != "/" {
		return nil, fmt.Errorf("basePath %q: only \"/\" is supported", bp)
	}
	if err := checkJSONConsumed(doc["consumes"]); err != nil {
		return nil, err
	}
	info, _ := doc["info"].(map[string]any)
	version, _ := info["version"].(string)
	defs, _ := doc["definitions"].(map[string]any)
	c := &compiler{defs: defs, index: map[string]int{}, t: &table{Version: version}}
	paths, _ := doc["paths"].(map[string]any)
	for _, tmpl := range slices.Sorted(maps.Keys(paths)) {
		item, ok := paths[tmpl].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("paths.%s: not an object", tmpl)
		}
		if err := c.addPath(tmpl, item); err != nil {
			return nil, err
		}
	}
	for i := range c.t.Schemas {
		c.t.Schemas[i].Empty = c.isEmpty(i, map[int]bool{})
	}
	return c.t, nil
}

func checkJSONConsumed(v any) error {
	list, _ := v.([]any)
	for _, ct := range list {
		if ct == "application/json" {
			return nil
		}
	}
	return fmt.Errorf("consumes %v: the API must consume application/json", v)
}

var methods = map[string]string{"get": "GET", "put": "PUT", "patch": "PATCH", "post": "POST", "delete": "DELETE", "head": "HEAD", "options": "OPTIONS"}

func (c *compiler) addPath(tmpl string, item map[string]any) error {
	if !strings.HasPrefix(tmpl, "/") {
		return fmt.Errorf("paths.%s: a path must start with /", tmpl)
	}
	for _, key := range slices.Sorted(maps.Keys(item)) {
		if strings.HasPrefix(key, "x-") {
			continue
		}
		method, ok := methods[key]
		if !ok {
			return fmt.Errorf("paths.%s.%s: not supported", tmpl, key)
		}
		op, _ := item[key].(map[string]any)
		if cons, ok := op["consumes"]; ok {
			if err := checkJSONConsumed(cons); err != nil {
				return fmt.Errorf("paths.%s.%s: %w", tmpl, key, err)
			}
		}
		r := route{Method: method, Template: tmpl}
		params, _ := op["parameters"].([]any)
		for i, p := range params {
			if err := c.addParam(&r, p); err != nil {
				return fmt.Errorf("paths.%s.%s.parameters[%d]: %w", tmpl, key, i, err)
			}
		}
		c.t.Routes = append(c.t.Routes, r)
	}
	return nil
}

func (c *compiler) addParam(r *route, p any) error {
	m, ok := p.(map[string]any)
	if !ok {
		return fmt.Errorf("not an object")
	}
	if _, ok := m["$ref"]; ok {
		return fmt.Errorf("parameter references are not supported")
	}
	name, _ := m["name"].(string)
	required, _ := m["required"].(bool)
	switch m["in"] {
	case "body":
		s, ok := m["schema"]
		if !ok {
			return fmt.Errorf("body parameter %q has no schema", name)
		}
		idx, err := c.schema(s, name)
		if err != nil {
			return err
		}
		r.Body = &body{Required: required, Schema: idx}
	case "path":
		// A path parameter's schema is the parameter object itself, minus
		// the parameter's own fields.
		s := map[string]any{}
		for k, v := range m {
			switch k {
			case "name", "in", "required", "description":
			default:
				s[k] = v
			}
		}
		idx, err := c.schema(s, name)
		if err != nil {
			return err
		}
		r.Params = append(r.Params, param{Name: name, Required: required, Schema: idx})
	default:
		return fmt.Errorf("%v parameters are not supported", m["in"])
	}
	return nil
}

// schema compiles one schema object (or $ref) and returns its index.
func (c *compiler) schema(v any, where string) (int, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return 0, fmt.Errorf("%s: schema is not an object", where)
	}
	if ref, ok := m["$ref"].(string); ok {
		// As in Swagger 2.0 (and the reference validator), keywords beside
		// a $ref are ignored.
		return c.definition(ref, where)
	}
	idx := len(c.t.Schemas)
	c.t.Schemas = append(c.t.Schemas, schema{})
	var s schema
	for _, key := range slices.Sorted(maps.Keys(m)) {
		val := m[key]
		at := where + "." + key
		switch {
		case slices.Contains(annotations, key):
		case key == "x-nullable":
			return 0, fmt.Errorf("%s: not supported", at)
		case strings.HasPrefix(key, "x-"):
		case key == "type":
			t, ok := val.(string)
			if !ok || !slices.Contains([]string{"object", "array", "string", "integer", "number", "boolean"}, t) {
				return 0, fmt.Errorf("%s: type %v is not supported", at, val)
			}
			s.Type = t
		case key == "format":
			s.Format, _ = val.(string)
		case key == "enum":
			list, ok := val.([]any)
			if !ok {
				return 0, fmt.Errorf("%s: not a list", at)
			}
			s.Enum = list
		case key == "minimum" || key == "maximum":
			n, ok := val.(json.Number)
			if !ok {
				return 0, fmt.Errorf("%s: not a number", at)
			}
			f, err := n.Float64()
			if err != nil {
				return 0, fmt.Errorf("%s: %w", at, err)
			}
			if key == "minimum" {
				s.Min = &f
			} else {
				s.Max = &f
			}
		case key == "required":
			list, _ := val.([]any)
			for _, r := range list {
				name, ok := r.(string)
				if !ok {
					return 0, fmt.Errorf("%s: not a list of names", at)
				}
				s.Required = append(s.Required, name)
			}
		case key == "properties":
			props, ok := val.(map[string]any)
			if !ok {
				return 0, fmt.Errorf("%s: not an object", at)
			}
			s.Properties = map[string]int{}
			for _, name := range slices.Sorted(maps.Keys(props)) {
				pi, err := c.schema(props[name], at+"."+name)
				if err != nil {
					return 0, err
				}
				s.Properties[name] = pi
			}
		case key == "additionalProperties":
			switch a := val.(type) {
			case bool:
				s.Extra = extraDenied
				if a {
					s.Extra = extraAllowed
				}
			default:
				ai, err := c.schema(a, at)
				if err != nil {
					return 0, err
				}
				s.Extra, s.ExtraSchema = extraSchema, ai
			}
		case key == "items":
			ii, err := c.schema(val, at)
			if err != nil {
				return 0, err
			}
			s.Items = &ii
		default:
			return 0, fmt.Errorf("%s: keyword not supported by this validator", at)
		}
	}
	// Firecracker deserialises with serde's deny_unknown_fields: an object
	// that declares properties and says nothing about others refuses them.
	// Objects that explicitly allow extra properties (the MMDS contents)
	// stay open.
	if len(s.Properties) > 0 && s.Extra == extraUnset {
		s.Extra = extraDenied
	}
	c.t.Schemas[idx] = s
	return idx, nil
}

func (c *compiler) definition(ref, where string) (int, error) {
	name, ok := strings.CutPrefix(ref, "#/definitions/")
	if !ok {
		return 0, fmt.Errorf("%s: $ref %q: only #/definitions/ references are supported", where, ref)
	}
	if idx, ok := c.index[name]; ok {
		return idx, nil
	}
	def, ok := c.defs[name]
	if !ok {
		return 0, fmt.Errorf("%s: $ref %q: no such definition", where, ref)
	}
	if m, ok := def.(map[string]any); ok {
		if alias, ok := m["$ref"]; ok {
			if alias == ref {
				return 0, fmt.Errorf("%s: $ref %q refers to itself", where, ref)
			}
			return c.schema(def, "definitions."+name)
		}
	}
	// Reserve the index first so a definition that refers to itself ends.
	c.index[name] = len(c.t.Schemas)
	idx, err := c.schema(def, "definitions."+name)
	if err != nil {
		return 0, err
	}
	c.index[name] = idx
	return idx, nil
}

// isEmpty is the reference validator's notion of a schema equivalent to {}.
func (c *compiler) isEmpty(i int, seen map[int]bool) bool {
	if seen[i] {
		return true
	}
	seen[i] = true
	s := c.t.Schemas[i]
	if s.Type != "" || s.Format != "" || len(s.Enum) > 0 || s.Min != nil || s.Max != nil || len(s.Required) > 0 || s.Extra == extraDenied {
		return false
	}
	if s.Extra == extraSchema && !c.isEmpty(s.ExtraSchema, seen) {
		return false
	}
	if s.Items != nil && !c.isEmpty(*s.Items, seen) {
		return false
	}
	for _, p := range s.Properties {
		if !c.isEmpty(p, seen) {
			return false
		}
	}
	return true
}
