package openapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// obj is one JSON object of the document; encoding/json sorts its keys,
// which keeps the output stable.
type obj = map[string]any

// Generate returns the OpenAPI document of the daemon API, reading doc
// comments from the repository at root. It fails when the operation table
// disagrees with the API's method constants, the daemon's registrations or
// the Go client.
func Generate(root string) ([]byte, error) {
	src := newSources(root)
	apiPkg, err := src.pkg(reflect.TypeFor[api.Event]().PkgPath())
	if err != nil {
		return nil, err
	}
	ops := operations()
	if err := checkTable(root, ops, apiPkg); err != nil {
		return nil, err
	}
	g := &generator{src: src, schemas: obj{}}
	paths := obj{}
	for _, o := range ops {
		if err := checkOperation(o); err != nil {
			return nil, err
		}
		item, err := g.operation(o, apiPkg)
		if err != nil {
			return nil, err
		}
		paths["/v1/"+o.method] = obj{"post": item}
	}
	if err := g.wireSchemas(); err != nil {
		return nil, err
	}
	doc := obj{
		"openapi": "3.0.3",
		"info": obj{
			"title":       "banger daemon API",
			"version":     "v1",
			"description": apiPkg.doc + "\n" + transportNote,
		},
		"servers": []any{obj{
			"url":         "http://bangerd",
			"description": "the daemon's Unix socket; the host name is ignored",
		}},
		"paths": paths,
		"components": obj{
			"schemas": g.schemas,
			"responses": obj{"Error": obj{
				"description": "The call failed. The HTTP status follows the error's code: " + statusByCode(apiPkg.enums["Code"]) + ".",
				"content":     obj{"application/json": obj{"schema": ref("ErrorResponse")}},
			}},
		},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode the OpenAPI document: %w", err)
	}
	return buf.Bytes(), nil
}

const transportNote = `The socket is $XDG_RUNTIME_DIR/banger/bangerd.sock (/tmp/banger-UID/bangerd.sock without XDG_RUNTIME_DIR) for a user-mode daemon and /run/banger/bangerd.sock for the system daemon; for example:

    curl --unix-socket /run/banger/bangerd.sock -d '{"name":"dev"}' http://bangerd/v1/vm.show

Methods without a request body also answer GET. Request bodies are decoded strictly: an unknown field is an invalid_argument error. Go programs use the typed client in github.com/banger-dev/banger/pkg/client.`

type generator struct {
	src     *sources
	schemas obj
}

func (g *generator) operation(o operation, apiPkg *goPackage) (obj, error) {
	summary, description := splitDoc(apiPkg.funcDocs["Client."+o.client], o.client)
	item := obj{
		"operationId": o.method,
		"tags":        []any{strings.SplitN(o.method, ".", 2)[0]},
		"summary":     summary,
		"responses":   obj{"default": obj{"$ref": "#/components/responses/Error"}},
	}
	if description != "" {
		item["description"] = description
	}
	if o.req != reflect.TypeFor[none]() {
		s, err := g.schema(o.req)
		if err != nil {
			return nil, err
		}
		item["requestBody"] = obj{"required": true, "content": obj{"application/json": obj{"schema": s}}}
	}
	if o.upgrade != "" {
		item["parameters"] = []any{
			obj{"name": "Connection", "in": "header", "required": true, "schema": obj{"type": "string", "enum": []any{"Upgrade"}}},
			obj{"name": "Upgrade", "in": "header", "required": true, "schema": obj{"type": "string", "enum": []any{o.upgrade}}},
		}
		item["responses"].(obj)["101"] = obj{"description": "Switching Protocols: the connection then carries banger's framed " + o.upgrade + " stream (internal/agent's protocol), which pkg/client speaks."}
		return item, nil
	}
	result, err := g.schema(o.resp)
	if err != nil {
		return nil, err
	}
	content := obj{"application/json": obj{"schema": obj{
		"type":       "object",
		"properties": obj{"result": result},
		"required":   []any{"result"},
	}}}
	desc := "The result."
	if o.progress {
		desc = "The result; with \"Accept: application/x-ndjson\", progress events first (one StreamLine per line, the last holding the result or the error)."
		content["application/x-ndjson"] = obj{"schema": ref("StreamLine")}
	}
	item["responses"].(obj)["200"] = obj{"description": desc, "content": content}
	return item, nil
}

// wireSchemas adds the envelope types the operations refer to by name.
func (g *generator) wireSchemas() error {
	event, err := g.schema(reflect.TypeFor[api.Event]())
	if err != nil {
		return err
	}
	apiErr, err := g.schema(reflect.TypeFor[api.Error]())
	if err != nil {
		return err
	}
	g.schemas["ErrorResponse"] = obj{
		"type":       "object",
		"properties": obj{"error": apiErr},
		"required":   []any{"error"},
	}
	g.schemas["StreamLine"] = obj{
		"type":        "object",
		"description": "One line of a streamed response: an event, or (last) the result or the error.",
		"properties":  obj{"event": event, "result": obj{}, "error": apiErr},
	}
	return nil
}

// statusByCode says which HTTP status the daemon answers for each error
// code, asking a real api.Server rather than restating its mapping.
func statusByCode(codes []string) string {
	parts := make([]string, 0, len(codes))
	for _, code := range codes {
		srv := api.NewServer(slog.New(slog.DiscardHandler), time.Now)
		api.Handle(srv, "fail", func(context.Context, none, api.Progress) (none, error) {
			return none{}, api.Errorf(api.Code(code), "failed")
		})
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/fail", nil))
		parts = append(parts, fmt.Sprintf("%s %d", code, rec.Code))
	}
	return strings.Join(parts, ", ")
}

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// schema returns the schema of t: a reference for named structs and enums
// (added to the components on first use), inline otherwise.
func (g *generator) schema(t reflect.Type) (obj, error) {
	if t.Kind() == reflect.Pointer {
		return g.schema(t.Elem())
	}
	switch t {
	case timeType:
		return obj{"type": "string", "format": "date-time"}, nil
	case rawType:
		return obj{"description": "any JSON value"}, nil
	}
	pkg, err := g.src.pkg(t.PkgPath())
	if err != nil {
		return nil, err
	}
	if t.Kind() == reflect.String && len(pkg.enums[t.Name()]) > 0 {
		return g.named(t, pkg, func() (obj, error) {
			return obj{"type": "string", "enum": toAny(pkg.enums[t.Name()])}, nil
		})
	}
	if t.Kind() == reflect.Struct && t.Name() != "" {
		return g.named(t, pkg, func() (obj, error) { return g.object(t) })
	}
	return g.unnamed(t)
}

func (g *generator) unnamed(t reflect.Type) (obj, error) {
	switch t.Kind() {
	case reflect.String:
		return obj{"type": "string"}, nil
	case reflect.Bool:
		return obj{"type": "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return obj{"type": "integer", "format": intFormat(t)}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return obj{"type": "integer", "format": intFormat(t), "minimum": 0}, nil
	case reflect.Float32, reflect.Float64:
		return obj{"type": "number"}, nil
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return obj{"type": "string", "format": "byte"}, nil
		}
		items, err := g.schema(t.Elem())
		if err != nil {
			return nil, err
		}
		return obj{"type": "array", "items": items}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("openapi: map key %s is not a string", t.Key())
		}
		values, err := g.schema(t.Elem())
		if err != nil {
			return nil, err
		}
		return obj{"type": "object", "additionalProperties": values}, nil
	case reflect.Struct:
		return g.object(t)
	case reflect.Interface:
		return obj{"description": "any JSON value"}, nil
	}
	return nil, fmt.Errorf("openapi: no schema for Go type %s", t)
}

func intFormat(t reflect.Type) string {
	if t.Bits() > 32 {
		return "int64"
	}
	return "int32"
}

// named adds t's schema to the components once and refers to it.
func (g *generator) named(t reflect.Type, pkg *goPackage, build func() (obj, error)) (obj, error) {
	name := componentName(t)
	if _, done := g.schemas[name]; !done {
		g.schemas[name] = obj{} // placeholder: breaks recursion
		s, err := build()
		if err != nil {
			return nil, err
		}
		if doc := strings.TrimSpace(pkg.typeDocs[t.Name()]); doc != "" {
			s["description"] = doc
		}
		g.schemas[name] = s
	}
	return ref(name), nil
}

// componentName is the type's name, prefixed with its package's for types
// from outside internal/api (buildinfo.Info is BuildinfoInfo).
func componentName(t reflect.Type) string {
	if t.PkgPath() == reflect.TypeFor[api.Event]().PkgPath() {
		return t.Name()
	}
	p := filepath.Base(t.PkgPath())
	return strings.ToUpper(p[:1]) + p[1:] + t.Name()
}

// object is the schema of struct t: its exported fields under their json
// names; a field without omitempty is required, and a slice or map one may
// be null (a nil one encodes so).
func (g *generator) object(t reflect.Type) (obj, error) {
	props := obj{}
	var required []any
	if err := g.addFields(t, props, &required); err != nil {
		return nil, err
	}
	s := obj{"type": "object", "properties": props}
	if len(required) > 0 {
		sort.Slice(required, func(i, j int) bool { return required[i].(string) < required[j].(string) })
		s["required"] = required
	}
	return s, nil
}

func (g *generator) addFields(t reflect.Type, props obj, required *[]any) error {
	pkg, err := g.src.pkg(t.PkgPath())
	if err != nil {
		return err
	}
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			if err := g.addFields(f.Type, props, required); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		s, err := g.fieldSchema(f, pkg, t.Name())
		if err != nil {
			return fmt.Errorf("%s.%s: %w", t.Name(), f.Name, err)
		}
		optional := hasOption(opts, "omitempty") || hasOption(opts, "omitzero")
		if !optional {
			*required = append(*required, name)
			if k := f.Type.Kind(); k == reflect.Slice || k == reflect.Map || k == reflect.Pointer {
				s["nullable"] = true
			}
		}
		props[name] = s
	}
	return nil
}

// fieldSchema is f's schema with its doc comment; a reference cannot carry
// siblings in OpenAPI 3.0, so a documented one is wrapped in allOf.
func (g *generator) fieldSchema(f reflect.StructField, pkg *goPackage, owner string) (obj, error) {
	s, err := g.schema(f.Type)
	if err != nil {
		return nil, err
	}
	doc := strings.TrimSpace(pkg.fieldDocs[owner+"."+f.Name])
	if doc == "" {
		return s, nil
	}
	if _, isRef := s["$ref"]; isRef {
		s = obj{"allOf": []any{s}}
	}
	s["description"] = doc
	return s, nil
}

func hasOption(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// splitDoc returns a Go doc comment's first sentence without the Go name it
// starts with ("VMShow returns one VM." is "Returns one VM"), and the whole
// text.
func splitDoc(doc, goName string) (summary, description string) {
	text := strings.TrimSpace(doc)
	first, _, _ := strings.Cut(strings.Join(strings.Fields(text), " "), ". ")
	first = strings.TrimSuffix(first, ".")
	if rest, ok := strings.CutPrefix(first, goName+" "); ok && rest != "" {
		first = strings.ToUpper(rest[:1]) + rest[1:]
	}
	return first, text
}

func toAny(vals []string) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v
	}
	return out
}
