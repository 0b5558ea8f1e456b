package mcp

import (
	"context"
	"encoding/json"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/banger-dev/banger/internal/api"
)

// Resource URIs: banger://vm/NAME is a VM's state as JSON, and
// banger://vm/NAME/logs the tail of its serial console.
const (
	vmURIPrefix   = "banger://vm/"
	logsURISuffix = "/logs"
	logLines      = 500
)

func (s *Server) addResources() {
	s.srv.AddResourceTemplate(&sdk.ResourceTemplate{
		Name: "vm", Title: "VM state", URITemplate: vmURIPrefix + "{name}", MIMEType: "application/json",
		Description: "One of your VMs: state, address, shape, forwards, labels (as vm_show returns it).",
	}, s.readVM)
	s.srv.AddResourceTemplate(&sdk.ResourceTemplate{
		Name: "vm-logs", Title: "VM console log", URITemplate: vmURIPrefix + "{name}" + logsURISuffix, MIMEType: "text/plain",
		Description: "The last 500 lines of one of your VMs' serial console (kernel and boot messages).",
	}, s.readVM)
}

// readVM serves both resource templates.
func (s *Server) readVM(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
	uri := req.Params.URI
	name, logs := strings.CutSuffix(strings.TrimPrefix(uri, vmURIPrefix), logsURISuffix)
	if !strings.HasPrefix(uri, vmURIPrefix) || name == "" || strings.Contains(name, "/") {
		return nil, sdk.ResourceNotFoundError(uri)
	}
	vm, err := s.ownedVM(ctx, req, name)
	if api.IsCode(err, api.CodeNotFound) {
		return nil, sdk.ResourceNotFoundError(uri)
	}
	if err != nil {
		return nil, toolError(err)
	}
	if logs {
		l, err := s.opts.Daemon.VMLogs(ctx, api.VMLogsRequest{Name: vm.Name, Lines: logLines})
		if err != nil {
			return nil, toolError(err)
		}
		return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: uri, MIMEType: "text/plain", Text: strings.ToValidUTF8(l.Text, "\uFFFD")}}}, nil
	}
	b, err := json.MarshalIndent(vmInfo(vm), "", "  ")
	if err != nil {
		return nil, err
	}
	return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(b)}}}, nil
}
