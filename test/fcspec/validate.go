package fcspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/big"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Validator checks requests against one compiled spec. It is safe for
// concurrent use.
type Validator struct {
	t      *table
	routes []compiledRoute
}

// compiledRoute is a route with its template split into segments: a
// segment in braces matches any one path segment, including an empty one.
type compiledRoute struct {
	route
	segments []string
}

func newValidator(t *table) *Validator {
	v := &Validator{t: t}
	for _, r := range t.Routes {
		v.routes = append(v.routes, compiledRoute{route: r, segments: strings.Split(strings.TrimRight(r.Template, "/"), "/")})
	}
	return v
}

// SpecVersion is the spec's info.version, e.g. "1.16.1" or "1.17.0-dev".
func (v *Validator) SpecVersion() string { return v.t.Version }

// ValidateRequest reports whether Firecracker's API accepts method on path
// with body (JSON, or empty for no body). The returned error wraps one of
// ErrUnknownPath, ErrMethodNotAllowed or ErrInvalidRequest and reads well as
// a Firecracker fault_message.
func (v *Validator) ValidateRequest(method, path string, body []byte) error {
	r, params, err := v.findRoute(method, path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if err := v.check(r, params, body); err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, ErrInvalidRequest, err)
	}
	return nil
}

// findRoute matches path against the templates as the reference router
// does: on the path's escaped form (so a parameter is compared, as
// Firecracker compares it, in the form it had on the wire); trailing slashes
// do not count; a parameter matches one segment, which may be empty, and a
// trailing parameter may be missing altogether. A path that is exactly a
// template without parameters but lacks the method is ErrMethodNotAllowed;
// any other miss is ErrUnknownPath.
func (v *Validator) findRoute(method, path string) (*compiledRoute, map[string]string, error) {
	escaped := (&url.URL{Path: path}).EscapedPath()
	segs := strings.Split(strings.TrimRight(escaped, "/"), "/")
	exact := false
	for i := range v.routes {
		r := &v.routes[i]
		if r.Template == escaped {
			exact = true
		}
		if r.Method != method {
			continue
		}
		if params, ok := match(r.segments, segs); ok {
			return r, params, nil
		}
	}
	if exact {
		return nil, nil, ErrMethodNotAllowed
	}
	return nil, nil, ErrUnknownPath
}

func match(tmpl, segs []string) (map[string]string, bool) {
	if len(segs) > len(tmpl) {
		return nil, false
	}
	params := map[string]string{}
	for i, t := range tmpl {
		name, isParam := paramName(t)
		switch {
		case i >= len(segs) && isParam:
			params[name] = ""
		case i >= len(segs):
			return nil, false
		case isParam:
			params[name] = segs[i]
		case t != segs[i]:
			return nil, false
		}
	}
	return params, true
}

func paramName(seg string) (string, bool) {
	name, ok := strings.CutPrefix(seg, "{")
	if !ok || !strings.HasSuffix(name, "}") {
		return "", false
	}
	return strings.TrimSpace(strings.TrimSuffix(name, "}")), true
}

func (v *Validator) check(r *compiledRoute, params map[string]string, body []byte) error {
	for _, p := range r.Params {
		val, found := params[p.Name]
		switch {
		case !found && p.Required:
			return fmt.Errorf("path parameter %q: value is required but missing", p.Name)
		case !found:
		case val == "":
			return fmt.Errorf("path parameter %q: empty value is not allowed", p.Name)
		default:
			if err := v.visit(p.Schema, val, ""); err != nil {
				return fmt.Errorf("path parameter %q: %w", p.Name, err)
			}
		}
	}
	if r.Body == nil {
		if len(body) > 0 {
			// A body sent to an operation that takes none is a client bug;
			// Firecracker would ignore it, but we want to know.
			return fmt.Errorf("request body not allowed for this request")
		}
		return nil
	}
	if len(body) == 0 {
		if r.Body.Required {
			return fmt.Errorf("request body has an error: value is required but missing")
		}
		return nil
	}
	// Like the reference: the first JSON value is the body, numbers keep
	// their text, and a later duplicate key wins.
	var value any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&value); err != nil {
		return fmt.Errorf("request body has an error: failed to decode request body: %w", err)
	}
	if err := v.visit(r.Body.Schema, value, ""); err != nil {
		return fmt.Errorf("request body has an error: doesn't match schema: %w", err)
	}
	return CheckPathIDMatchesBody(r.Template, params, body)
}

// visit checks value against schema i. at is the JSON path so far, for the
// message.
func (v *Validator) visit(i int, value any, at string) error {
	s := &v.t.Schemas[i]
	if s.Empty {
		if value == nil {
			return fieldError(at, "Value is not nullable")
		}
		return nil
	}
	if len(s.Enum) > 0 && !slices.ContainsFunc(s.Enum, func(e any) bool { return equalJSON(e, value) }) {
		allowed, _ := json.Marshal(s.Enum)
		return fieldError(at, "value is not one of the allowed values "+string(allowed))
	}
	switch val := value.(type) {
	case nil:
		return fieldError(at, "Value is not nullable")
	case bool:
		if !s.permits("boolean") {
			return s.typeError(at)
		}
		return nil
	case json.Number:
		f, err := val.Float64()
		if err != nil {
			return fieldError(at, "cannot convert json.Number to float64")
		}
		return s.checkNumber(f, at)
	case string:
		if !s.permits("string") {
			return s.typeError(at)
		}
		return nil
	case []any:
		if !s.permits("array") {
			return s.typeError(at)
		}
		if s.Items != nil {
			for n, item := range val {
				if err := v.visit(*s.Items, item, at+"."+strconv.Itoa(n)); err != nil {
					return err
				}
			}
		}
		return nil
	case map[string]any:
		return v.checkObject(s, val, at)
	}
	return fieldError(at, fmt.Sprintf("unhandled value of type %T", value))
}

func (v *Validator) checkObject(s *schema, obj map[string]any, at string) error {
	if !s.permits("object") {
		return s.typeError(at)
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if pi, ok := s.Properties[k]; ok {
			if err := v.visit(pi, obj[k], join(at, k)); err != nil {
				return err
			}
			continue
		}
		switch s.Extra {
		case extraDenied:
			return fieldError(at, fmt.Sprintf("property %q is unsupported", k))
		case extraSchema:
			if err := v.visit(s.ExtraSchema, obj[k], join(at, k)); err != nil {
				return err
			}
		}
	}
	for _, k := range s.Required {
		if _, ok := obj[k]; !ok {
			return fieldError(join(at, k), fmt.Sprintf("property %q is missing", k))
		}
	}
	return nil
}

func (s *schema) permits(typ string) bool {
	return s.Type == "" || s.Type == typ
}

func (s *schema) typeError(at string) error {
	return fieldError(at, fmt.Sprintf("value must be %s", article(s.Type)))
}

func article(t string) string {
	if strings.ContainsRune("aeiou", rune(t[0])) {
		return "an " + t
	}
	return "a " + t
}

// checkNumber applies type, integer format and bounds as the reference
// validator does; formats other than int32/int64 on integers are not
// checked there either.
func (s *schema) checkNumber(f float64, at string) error {
	integer := s.permits("integer") && !s.permits("number")
	if !integer && !s.permits("number") {
		return s.typeError(at)
	}
	if integer {
		if !big.NewFloat(f).IsInt() {
			return fieldError(at, "value must be an integer")
		}
		if lo, hi, ok := intFormatRange(s.Format); ok && !intInRange(f, lo, hi) {
			return fieldError(at, fmt.Sprintf("number must be an %s", s.Format))
		}
	}
	if s.Min != nil && !(*s.Min <= f) {
		return fieldError(at, fmt.Sprintf("number must be at least %g", *s.Min))
	}
	if s.Max != nil && !(*s.Max >= f) {
		return fieldError(at, fmt.Sprintf("number must be at most %g", *s.Max))
	}
	return nil
}

func intFormatRange(format string) (int64, int64, bool) {
	switch format {
	case "int32":
		return math.MinInt32, math.MaxInt32, true
	case "int64":
		return math.MinInt64, math.MaxInt64, true
	}
	return 0, 0, false
}

// intInRange reports whether f, converted to int64 as the reference does
// (2^63 counts as MaxInt64, which float64 cannot represent), is in [lo, hi].
func intInRange(f float64, lo, hi int64) bool {
	var n int64
	switch {
	case f == float64(math.MaxInt64):
		n = math.MaxInt64
	case f >= float64(math.MinInt64) && f < float64(math.MaxInt64):
		n = int64(f)
	default:
		return false
	}
	return n >= lo && n <= hi
}

// equalJSON compares an enum member with a value: numbers by value, the
// rest structurally.
func equalJSON(a, b any) bool {
	if x, ok := numberValue(a); ok {
		y, ok := numberValue(b)
		return ok && x == y
	}
	switch a := a.(type) {
	case []any:
		b, ok := b.([]any)
		return ok && slices.EqualFunc(a, b, equalJSON)
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, av := range a {
			bv, ok := b[k]
			if !ok || !equalJSON(av, bv) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func numberValue(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

func fieldError(at, reason string) error {
	if at == "" {
		return fmt.Errorf("%s", reason)
	}
	return fmt.Errorf("field %q: %s", strings.TrimPrefix(at, "."), reason)
}

func join(at, name string) string { return at + "." + name }

// pathIDField names the path parameter of template that the body must
// repeat. The schema cannot say this, but Firecracker refuses a mismatch
// ("The id from the path does not match the id from the body!").
func pathIDField(template string) (string, bool) {
	switch template {
	case "/drives/{drive_id}":
		return "drive_id", true
	case "/network-interfaces/{iface_id}":
		return "iface_id", true
	case "/pmem/{id}":
		return "id", true
	}
	return "", false
}

// CheckPathIDMatchesBody refuses a body whose id field differs from the id
// in the path (for the routes that carry one), as Firecracker does. It is
// exported for package oas, which applies the same rule after its schema
// check.
func CheckPathIDMatchesBody(template string, params map[string]string, body []byte) error {
	field, ok := pathIDField(template)
	if !ok || len(body) == 0 {
		return nil
	}
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil // the schema check already judged the body
	}
	if got, _ := obj[field].(string); got != params[field] {
		return fmt.Errorf("the id from the path (%q) does not match the id from the body (%q)", params[field], got)
	}
	return nil
}
