package main

import "strings"

// phase says when Firecracker accepts a request: the VMM answers some only
// before InstanceStart, some only after it (rpc_interface.rs, the
// PrebootApiController and RuntimeApiController match arms).
type phase int

const (
	anyPhase phase = iota
	preBootOnly
	postBootOnly
)

// route is one API operation the fake models. pattern may end in "/{id}".
type route struct {
	method  string
	pattern string
	phase   phase
	hasID   bool
	handle  func(v *microVM, id string, body []byte) (any, error)
}

// routes lists what the fake implements. Operations the spec allows but that
// are missing here (balloon statistics, pmem, memory hotplug, ...) get a
// clear "not implemented" fault rather than a fake success.
var routes = []route{
	{method: "GET", pattern: "/", handle: (*microVM).getInstanceInfo},
	{method: "GET", pattern: "/version", handle: (*microVM).getVersion},
	{method: "GET", pattern: "/vm/config", handle: (*microVM).getFullConfig},
	{method: "GET", pattern: "/machine-config", handle: (*microVM).getMachineConfig},
	{method: "PUT", pattern: "/machine-config", phase: preBootOnly, handle: (*microVM).putMachineConfig},
	{method: "PATCH", pattern: "/machine-config", phase: preBootOnly, handle: (*microVM).patchMachineConfig},
	{method: "PUT", pattern: "/boot-source", phase: preBootOnly, handle: (*microVM).putBootSource},
	{method: "PUT", pattern: "/drives/{id}", phase: preBootOnly, hasID: true, handle: (*microVM).putDrive},
	{method: "PATCH", pattern: "/drives/{id}", phase: postBootOnly, hasID: true, handle: (*microVM).patchDrive},
	{method: "PUT", pattern: "/network-interfaces/{id}", phase: preBootOnly, hasID: true, handle: (*microVM).putNetIface},
	{method: "PATCH", pattern: "/network-interfaces/{id}", phase: postBootOnly, hasID: true, handle: (*microVM).patchNetIface},
	{method: "PUT", pattern: "/vsock", phase: preBootOnly, handle: (*microVM).putVsock},
	{method: "PUT", pattern: "/logger", phase: preBootOnly, handle: (*microVM).putLogger},
	{method: "PUT", pattern: "/metrics", phase: preBootOnly, handle: (*microVM).putMetrics},
	{method: "GET", pattern: "/mmds", handle: (*microVM).getMMDS},
	{method: "PUT", pattern: "/mmds", handle: (*microVM).putMMDS},
	{method: "PATCH", pattern: "/mmds", handle: (*microVM).patchMMDS},
	{method: "PUT", pattern: "/mmds/config", phase: preBootOnly, handle: recordOnly("mmds-config")},
	{method: "PUT", pattern: "/entropy", phase: preBootOnly, handle: recordOnly("entropy")},
	{method: "PUT", pattern: "/serial", phase: preBootOnly, handle: recordOnly("serial")},
	{method: "PUT", pattern: "/cpu-config", phase: preBootOnly, handle: recordOnly("cpu-config")},
	{method: "PUT", pattern: "/balloon", phase: preBootOnly, handle: recordOnly("balloon")},
	{method: "PUT", pattern: "/actions", handle: (*microVM).putAction},
	{method: "PATCH", pattern: "/vm", phase: postBootOnly, handle: (*microVM).patchVMState},
	{method: "PUT", pattern: "/snapshot/create", phase: postBootOnly, handle: (*microVM).createSnapshot},
	// snapshot/load checks its own phase: Firecracker parses the body (the
	// mem_backend / mem_file_path rule) before it looks at the VM.
	{method: "PUT", pattern: "/snapshot/load", handle: (*microVM).loadSnapshot},
}

// findRoute matches method and path against routes, returning the {id}
// segment when the pattern has one.
func findRoute(method, path string) (route, string, bool) {
	for _, rt := range routes {
		if rt.method != method {
			continue
		}
		if !rt.hasID {
			if path == rt.pattern {
				return rt, "", true
			}
			continue
		}
		prefix := strings.TrimSuffix(rt.pattern, "{id}")
		if id, ok := strings.CutPrefix(path, prefix); ok && id != "" && !strings.Contains(id, "/") {
			return rt, id, true
		}
	}
	return route{}, "", false
}
