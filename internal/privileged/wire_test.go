package privileged

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// validRequests is one well-formed request per op, as wire arguments keyed
// by the op's wire name (also the fuzz seeds): the golden requests of
// menu_test.go, encoded.
func validRequests(t testing.TB) map[string]any {
	out := map[string]any{}
	for _, c := range wireGolden(t) {
		args, _ := c.op.encode(c.req)
		out[c.op.opName()] = args
	}
	return out
}

func TestRequestRoundTripEveryOp(t *testing.T) {
	reqs := validRequests(t)
	if len(reqs) != len(menu()) {
		t.Fatalf("test covers %d ops, the menu has %d", len(reqs), len(menu()))
	}
	for _, e := range menu() {
		op := e.opName()
		args, ok := reqs[op]
		if !ok {
			t.Fatalf("no valid request for %s", op)
		}
		data, err := EncodeRequest(op, args)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRequest(data)
		if err != nil {
			t.Fatalf("%s: decode %s: %v", op, data, err)
		}
		if got.Op != op || !reflect.DeepEqual(got.Args, args) {
			t.Fatalf("%s: round trip gave %+v, want %+v", op, got.Args, args)
		}
	}
}

func TestDecodeRequestStrict(t *testing.T) {
	cases := []struct{ name, in string }{
		{"empty", ``},
		{"not an object", `[]`},
		{"string", `"bridge.ensure"`},
		{"null", `null`},
		{"no op", `{"args":{"name":"banger0"}}`},
		{"op not a string", `{"op":1}`},
		{"op object", `{"op":{"x":1}}`},
		{"unknown op", `{"op":"exec","args":{"cmd":"sh"}}`},
		{"op case", `{"op":"Bridge.Delete","args":{"name":"banger0"}}`},
		{"duplicate op", `{"op":"helper.info","op":"tap.delete","args":{"name":"bgt-a"}}`},
		{"duplicate op via escape", `{"op":"tap.delete","o\u0070":"helper.info","args":{"name":"bgt-a"}}`},
		{"duplicate arg", `{"op":"tap.delete","args":{"name":"bgt-a","name":"eth0"}}`},
		{"unknown top key", `{"op":"helper.info","as_uid":0}`},
		{"unknown arg", `{"op":"tap.delete","args":{"name":"bgt-a","force":true}}`},
		{"arg case-folded", `{"op":"tap.delete","args":{"Name":"bgt-a"}}`},
		{"arg case-folded unicode", `{"op":"tap.delete","args":{"nam\u212a":"bgt-a"}}`},
		{"nested arg", `{"op":"tap.delete","args":{"name":{"x":"bgt-a"}}}`},
		{"array arg", `{"op":"tap.delete","args":{"name":["bgt-a"]}}`},
		{"null arg", `{"op":"tap.delete","args":{"name":null}}`},
		{"args not object", `{"op":"tap.delete","args":"bgt-a"}`},
		{"args null", `{"op":"tap.delete","args":null}`},
		{"missing args", `{"op":"tap.delete"}`},
		{"args on no-arg op", `{"op":"helper.info","args":{"x":1}}`},
		{"trailing data", `{"op":"helper.info"} {"op":"tap.delete","args":{"name":"bgt-a"}}`},
		{"trailing garbage", `{"op":"helper.info"}x`},
		{"unterminated", `{"op":"helper.info"`},
		{"number as string", `{"op":"tap.create","args":{"name":"bgt-a","bridge":"banger0","uid":"1000","gid":1000}}`},
		{"float uid", `{"op":"tap.create","args":{"name":"bgt-a","bridge":"banger0","uid":1000.5,"gid":1000}}`},
		{"exponent uid", `{"op":"tap.create","args":{"name":"bgt-a","bridge":"banger0","uid":1e3,"gid":1000}}`},
		{"huge uid", `{"op":"tap.create","args":{"name":"bgt-a","bridge":"banger0","uid":99999999999999999999,"gid":1000}}`},
		{"bool as string", `{"op":"loop.attach","args":{"name":"banger-a-cow","read_only":"true"}}`},
		{"bad prefix", `{"op":"bridge.ensure","args":{"name":"banger0","subnet":"172.30.0.0/33"}}`},
		{"mode as string", `{"op":"file.chmod","args":{"path":"/run/banger/x","mode":"0660"}}`},
		{"negative mode", `{"op":"file.chmod","args":{"path":"/run/banger/x","mode":-1}}`},
		{"backing as arg", `{"op":"loop.attach","args":{"name":"banger-a-cow","read_only":true,"Backing":3}}`},
		{"invalid utf8", "{\"op\":\"tap.delete\",\"args\":{\"name\":\"bgt-\xff\"}}"},
		{"oversize", `{"op":"tap.delete","args":{"name":"` + strings.Repeat("a", MaxRequestSize) + `"}}`},
		{"comment", `{"op":"helper.info" /* hi */}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := DecodeRequest([]byte(c.in))
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("accepted %q as %+v (err %v)", c.in, req, err)
			}
		})
	}
}

func TestDecodeRequestAcceptsWhitespaceAndOrder(t *testing.T) {
	in := " \n{ \"args\" :\t{ \"name\" : \"bgt-a\" } , \"op\" : \"tap.delete\" }\n"
	req, err := DecodeRequest([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if req.Op != OpDeleteTap.Name() || req.Args.(*Named).Name != "bgt-a" {
		t.Fatalf("got %+v", req)
	}
}

// FuzzDecodeRequest: whatever the bytes, decoding never panics, and what it
// accepts re-encodes to a request that decodes to the same thing (no input
// means two different things to two readers). Validation of the decoded
// arguments must not panic either.
func FuzzDecodeRequest(f *testing.F) {
	for op, args := range validRequests(f) {
		data, err := EncodeRequest(op, args)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"op":"tap.delete","args":{"name":"bgt-a","name":"eth0"}}`))
	f.Add([]byte(`{"op":"tap.delete","args":{"Name":"eth0"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("decode error outside ErrInvalidArgument: %v", err)
			}
			return
		}
		if _, ok := lookup(req.Op); !ok {
			t.Fatalf("accepted unknown op %q", req.Op)
		}
		again, err := EncodeRequest(req.Op, req.Args)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", req, err)
		}
		req2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("re-decode %s: %v", again, err)
		}
		if req2.Op != req.Op || !reflect.DeepEqual(req2.Args, req.Args) {
			t.Fatalf("round trip changed the request: %+v -> %+v", req.Args, req2.Args)
		}
		if v, ok := req.Args.(interface{ Validate() error }); ok {
			_ = v.Validate()
		}
	})
}

func TestRemoteErrorMapsCodes(t *testing.T) {
	for code, sentinel := range map[string]error{
		CodeInvalidArgument: ErrInvalidArgument,
		CodeRefused:         ErrRefused,
		CodeNotAvailable:    ErrNotAvailable,
	} {
		err := error(&RemoteError{Op: "x", Code: code, Message: "m"})
		if !errors.Is(err, sentinel) {
			t.Errorf("code %s does not match its sentinel", code)
		}
		if codeOf(sentinel) != code {
			t.Errorf("codeOf(%v) = %s, want %s", sentinel, codeOf(sentinel), code)
		}
	}
	if errors.Is(&RemoteError{Code: CodeFailed}, ErrInvalidArgument) {
		t.Error("failed code matched ErrInvalidArgument")
	}
	// The wire Response is what the client decodes strictly.
	var r Response
	if err := json.Unmarshal([]byte(`{"ok":false,"error":{"code":"refused","message":"no"}}`), &r); err != nil || r.Error.Code != CodeRefused {
		t.Fatalf("response decode: %+v %v", r, err)
	}
}
