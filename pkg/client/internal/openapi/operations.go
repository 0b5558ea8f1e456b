// Package openapi generates docs/api/openapi.json, the OpenAPI 3 document
// of the daemon's HTTP API, from the Go types in internal/api: schemas by
// reflection over the request and response types (json tags, omitempty as
// optional, typed string constants as enums), descriptions from their doc
// comments. Its test regenerates the document and fails when the checked-in
// copy differs, so CI keeps it current.
package openapi

import (
	"reflect"

	"github.com/banger-dev/banger/internal/api"
)

// operation is one daemon API method: what it takes and returns on the
// wire. The Go client method it names is checked against req, resp and
// progress (see checkOperation), and the daemon's registrations against the
// whole table, so the table cannot drift from the code silently.
type operation struct {
	method string
	// client is the api.Client method that calls it; its doc comment
	// describes the operation.
	client string
	// req is the request body; struct{} for none.
	req reflect.Type
	// resp is the result; struct{} for an empty one. Unused for upgrades.
	resp reflect.Type
	// progress marks methods that report progress events when streamed.
	progress bool
	// upgrade is the protocol a connection-upgrading method switches to.
	upgrade string
}

func op[Req, Resp any](method, client string, progress bool) operation {
	return operation{method: method, client: client, req: reflect.TypeFor[Req](), resp: reflect.TypeFor[Resp](), progress: progress}
}

func upgradeOp[Req any](method, client, protocol string) operation {
	return operation{method: method, client: client, req: reflect.TypeFor[Req](), resp: reflect.TypeFor[struct{}](), upgrade: protocol}
}

type none = struct{}

// operations is every method the daemon serves, in document order.
func operations() []operation {
	return []operation{
		op[none, api.DaemonInfo](api.MethodDaemonInfo, "DaemonInfo", false),
		op[none, api.ShutdownResponse](api.MethodDaemonShutdown, "DaemonShutdown", false),
		op[none, api.ReloadResponse](api.MethodDaemonReload, "DaemonReload", false),
		op[none, none](api.MethodEventsWatch, "WatchEvents", true),

		op[api.VMCreateRequest, api.VM](api.MethodVMCreate, "VMCreate", true),
		op[none, api.VMList](api.MethodVMList, "VMList", false),
		op[api.VMRef, api.VM](api.MethodVMShow, "VMShow", false),
		op[api.VMRef, api.VM](api.MethodVMStart, "VMStart", true),
		op[api.VMStopRequest, api.VM](api.MethodVMStop, "VMStop", true),
		op[api.VMRef, api.VM](api.MethodVMRestart, "VMRestart", true),
		op[api.VMDeleteRequest, none](api.MethodVMDelete, "VMDelete", true),
		op[api.VMLogsRequest, api.VMLogs](api.MethodVMLogs, "VMLogs", false),
		op[api.VMPortForwardRequest, api.VM](api.MethodVMPortForward, "VMPortForward", false),
		op[api.VMEgressRequest, api.VM](api.MethodVMEgress, "VMEgress", false),
		op[api.VMTTLRequest, api.VM](api.MethodVMTTL, "VMTTL", false),
		op[api.VMRef, api.VM](api.MethodVMPause, "VMPause", false),
		op[api.VMRef, api.VM](api.MethodVMResume, "VMResume", false),
		op[api.VMSnapshotRequest, api.Snapshot](api.MethodVMSnapshot, "VMSnapshot", true),
		op[api.VMRollbackRequest, api.VM](api.MethodVMRollback, "VMRollback", true),
		op[api.VMForkRequest, api.VMList](api.MethodVMFork, "VMFork", true),

		upgradeOp[api.VMExecRequest](api.MethodVMExec, "VMExec", api.UpgradeExec),
		upgradeOp[api.VMCopyRequest](api.MethodVMCopy, "VMCopyTo", api.UpgradeCopy),
		op[api.VMSyncRequest, api.VMSyncResult](api.MethodVMSync, "VMSync", true),
		op[api.VMRef, api.VMSSHInfo](api.MethodVMSSHInfo, "VMSSHInfo", false),
		op[none, api.SSHConfig](api.MethodSSHConfig, "SSHConfig", false),

		op[none, api.SnapshotList](api.MethodSnapshotList, "SnapshotList", false),
		op[api.SnapshotRef, api.Snapshot](api.MethodSnapshotShow, "SnapshotShow", false),
		op[api.SnapshotRef, none](api.MethodSnapshotDelete, "SnapshotDelete", false),

		op[none, api.ImageList](api.MethodImageList, "ImageList", false),
		op[api.ImageRef, api.Image](api.MethodImageShow, "ImageShow", false),
		op[api.ImageImportRequest, api.Image](api.MethodImageImport, "ImageImport", true),
		op[api.ImageBuildRequest, api.Image](api.MethodImageBuild, "ImageBuild", true),
		op[api.ImagePullRequest, api.Image](api.MethodImagePull, "ImagePull", true),
		op[none, api.ImagePruneResult](api.MethodImagePrune, "ImagePrune", false),
		op[api.ImageRef, none](api.MethodImageDelete, "ImageDelete", false),
		op[api.ImageWarmRequest, api.Snapshot](api.MethodImageWarm, "ImageWarm", true),
	}
}
