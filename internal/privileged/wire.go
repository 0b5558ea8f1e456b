package privileged

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"
)

// The helper protocol: one request per connection. The client writes one
// JSON object {"op": NAME, "args": {…}} (with a descriptor as SCM_RIGHTS for
// loop.attach, several for jailer.launch), shuts down its write side, and
// reads one JSON Response.

// MaxRequestSize bounds a request; real ones are a few hundred bytes.
const MaxRequestSize = 16 << 10

// Request is one decoded helper request.
type Request struct {
	Op string
	// Args points at the op's wire arguments (a fresh one from the menu's
	// entry); nil for ops without arguments.
	Args any
	// op is the menu's entry for Op.
	op entry
}

// EncodeRequest renders a request for op with its wire arguments (nil for
// none).
func EncodeRequest(op string, args any) ([]byte, error) {
	if _, ok := lookup(op); !ok {
		return nil, fmt.Errorf("unknown helper operation %q", op)
	}
	env := struct {
		Op   string `json:"op"`
		Args any    `json:"args,omitempty"`
	}{op, args}
	return json.Marshal(env)
}

// DecodeRequest parses a request strictly: valid UTF-8, one JSON object with
// exactly "op" and (for ops that take them) "args", no duplicate or unknown
// keys, keys matched case-sensitively, only scalar argument values, nothing
// after the object. Loose parsing is how two readers come to disagree about
// what a privileged request said.
func DecodeRequest(data []byte) (Request, error) {
	if len(data) > MaxRequestSize {
		return Request{}, malformed("request is %d bytes; the limit is %d", len(data), MaxRequestSize)
	}
	if !utf8.Valid(data) {
		return Request{}, malformed("request is not valid UTF-8")
	}
	op, rawArgs, argKeys, err := scanEnvelope(data)
	if err != nil {
		return Request{}, err
	}
	e, ok := lookup(op)
	if !ok {
		return Request{}, malformed("unknown operation %q", op)
	}
	args := e.newArgs()
	if args == nil {
		if len(argKeys) > 0 {
			return Request{}, malformed("operation %s takes no arguments", op)
		}
		return Request{Op: op, op: e}, nil
	}
	if rawArgs == nil {
		return Request{}, malformed("operation %s needs arguments", op)
	}
	allowed := jsonFields(args)
	for _, k := range argKeys {
		if !allowed[k] {
			return Request{}, malformed("operation %s has no argument %q", op, k)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(rawArgs))
	dec.DisallowUnknownFields()
	if err := dec.Decode(args); err != nil {
		return Request{}, malformed("arguments of %s: %v", op, err)
	}
	return Request{Op: op, Args: args, op: e}, nil
}

// scanEnvelope walks the tokens of data, enforcing the envelope's shape, and
// returns the op, the raw args object (nil when absent) and its keys.
func scanEnvelope(data []byte) (op string, rawArgs []byte, argKeys []string, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", nil, nil, malformed("request must be a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return "", nil, nil, malformed("%v", err)
		}
		key, _ := kt.(string)
		if seen[key] {
			return "", nil, nil, malformed("key %q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "op":
			vt, err := dec.Token()
			if err != nil {
				return "", nil, nil, malformed("%v", err)
			}
			s, ok := vt.(string)
			if !ok {
				return "", nil, nil, malformed("op must be a string")
			}
			op = s
		case "args":
			start := dec.InputOffset()
			keys, err := scanFlatObject(dec)
			if err != nil {
				return "", nil, nil, err
			}
			// The offset after the key precedes the colon; the decoder has
			// already checked there is exactly one.
			rawArgs = bytes.TrimLeft(data[start:dec.InputOffset()], " \t\r\n:")
			argKeys = keys
		default:
			return "", nil, nil, malformed("unknown key %q (a request has only \"op\" and \"args\")", key)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return "", nil, nil, malformed("%v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", nil, nil, malformed("data after the request object")
	}
	if !seen["op"] {
		return "", nil, nil, malformed("request has no op")
	}
	return op, rawArgs, argKeys, nil
}

// scanFlatObject consumes one object whose values are strings, numbers or
// booleans, and returns its keys; duplicates, nesting and null are refused.
func scanFlatObject(dec *json.Decoder) ([]string, error) {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, malformed("args must be a JSON object")
	}
	var keys []string
	seen := map[string]bool{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, malformed("%v", err)
		}
		key, _ := kt.(string)
		if seen[key] {
			return nil, malformed("argument %q appears twice", key)
		}
		seen[key] = true
		keys = append(keys, key)
		vt, err := dec.Token()
		if err != nil {
			return nil, malformed("%v", err)
		}
		switch vt.(type) {
		case string, json.Number, bool:
		default:
			return nil, malformed("argument %q must be a string, number or boolean", key)
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, malformed("%v", err)
	}
	return keys, nil
}

// jsonFields is the set of JSON names of the struct v points to.
func jsonFields(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	out := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: malformed request: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}

// Response is the helper's answer.
type Response struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *WireError      `json:"error,omitempty"`
}

// WireError carries an error and the class the client turns back into a
// sentinel.
type WireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes on the wire.
const (
	CodeInvalidArgument = "invalid_argument"
	CodeRefused         = "refused"
	CodeNotAvailable    = "not_available"
	CodeFailed          = "failed"
)

func codeOf(err error) string {
	switch {
	case errors.Is(err, ErrInvalidArgument):
		return CodeInvalidArgument
	case errors.Is(err, ErrRefused):
		return CodeRefused
	case errors.Is(err, ErrNotAvailable):
		return CodeNotAvailable
	}
	return CodeFailed
}

// RemoteError is an error the helper returned. errors.Is matches the
// sentinel its code stands for.
type RemoteError struct {
	Op      string
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return "root helper: " + e.Op + ": " + e.Message }

// Is maps the wire code back to the package's sentinels.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrInvalidArgument:
		return e.Code == CodeInvalidArgument
	case ErrRefused:
		return e.Code == CodeRefused
	case ErrNotAvailable:
		return e.Code == CodeNotAvailable
	}
	return false
}
