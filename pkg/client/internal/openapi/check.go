package openapi

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/api"
)

// checkTable fails unless the table lists each API method exactly once and
// exactly the methods the daemon registers.
func checkTable(root string, ops []operation, apiPkg *goPackage) error {
	inTable := map[string]bool{}
	for _, o := range ops {
		if inTable[o.method] {
			return fmt.Errorf("openapi: %s is listed twice in operations()", o.method)
		}
		inTable[o.method] = true
	}
	declared := map[string]string{}
	for name, v := range apiPkg.consts {
		if strings.HasPrefix(name, "Method") {
			declared[name] = v
		}
	}
	registered, err := registeredMethods(filepath.Join(root, "internal", "daemon"), declared)
	if err != nil {
		return err
	}
	var missing, stale []string
	for m := range registered {
		if !inTable[m] {
			missing = append(missing, m)
		}
	}
	for m := range inTable {
		if !registered[m] {
			stale = append(stale, m)
		}
	}
	if len(missing) > 0 || len(stale) > 0 {
		slices.Sort(missing)
		slices.Sort(stale)
		return fmt.Errorf("openapi: operations() in pkg/client/internal/openapi disagrees with the API: add %v, remove %v (not registered by internal/daemon)", missing, stale)
	}
	return nil
}

var (
	ctxType   = reflect.TypeFor[context.Context]()
	eventFunc = reflect.TypeFor[func(api.Event)]()
	errType   = reflect.TypeFor[error]()
)

// checkOperation fails unless o agrees with its Go client method: the
// method exists, takes o.req (or the name a one-field reference request
// carries), returns o.resp (or the list a one-field list result wraps), and
// takes a progress callback exactly when o.progress.
func checkOperation(o operation) error {
	m, ok := reflect.TypeFor[*api.Client]().MethodByName(o.client)
	if !ok {
		return fmt.Errorf("openapi: %s: api.Client has no method %s", o.method, o.client)
	}
	ft := m.Type
	var params []reflect.Type
	for i := 1; i < ft.NumIn(); i++ { // skip the receiver
		params = append(params, ft.In(i))
	}
	if len(params) == 0 || params[0] != ctxType {
		return fmt.Errorf("openapi: %s: Client.%s does not take a context first", o.method, o.client)
	}
	params = params[1:]
	if hasProgress := slices.Contains(params, eventFunc); hasProgress != o.progress && o.upgrade == "" {
		return fmt.Errorf("openapi: %s: progress is %v in operations(), but Client.%s's callback says %v", o.method, o.progress, o.client, hasProgress)
	}
	if !takesRequest(params, o.req) {
		return fmt.Errorf("openapi: %s: Client.%s does not send %s", o.method, o.client, o.req)
	}
	if o.upgrade == "" && !returnsResult(ft, o.resp) {
		return fmt.Errorf("openapi: %s: Client.%s does not return %s", o.method, o.client, o.resp)
	}
	return nil
}

func takesRequest(params []reflect.Type, req reflect.Type) bool {
	if req == reflect.TypeFor[none]() {
		return len(params) == 0 || params[0] == eventFunc
	}
	if len(params) == 0 {
		return false
	}
	if params[0] == req {
		return true
	}
	// VMShow(ctx, name) sends VMRef{Name: name}.
	return params[0].Kind() == reflect.String && req.NumField() == 1 && req.Field(0).Type.Kind() == reflect.String
}

func returnsResult(ft reflect.Type, resp reflect.Type) bool {
	if ft.NumOut() == 1 {
		return ft.Out(0) == errType && resp == reflect.TypeFor[none]()
	}
	if ft.NumOut() != 2 || ft.Out(1) != errType {
		return false
	}
	got := ft.Out(0)
	if got == resp {
		return true
	}
	// VMList(ctx) returns the []VM inside VMList{VMs: ...}.
	return resp.Kind() == reflect.Struct && resp.NumField() == 1 && resp.Field(0).Type == got
}
