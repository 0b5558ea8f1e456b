package api

import "context"

// Typed wrappers over Call: one per method, so the CLI and TUI never spell
// method names or decode JSON themselves.

// DaemonInfo asks the daemon who it is.
func (c *Client) DaemonInfo(ctx context.Context) (DaemonInfo, error) {
	var out DaemonInfo
	err := c.Call(ctx, MethodDaemonInfo, nil, &out, nil)
	return out, err
}

// DaemonShutdown asks the daemon to exit; running VMs keep running.
func (c *Client) DaemonShutdown(ctx context.Context) (ShutdownResponse, error) {
	var out ShutdownResponse
	err := c.Call(ctx, MethodDaemonShutdown, nil, &out, nil)
	return out, err
}

// DaemonReload asks the daemon to apply its configuration files as they
// are now (see ReloadResponse).
func (c *Client) DaemonReload(ctx context.Context) (ReloadResponse, error) {
	var out ReloadResponse
	err := c.Call(ctx, MethodDaemonReload, nil, &out, nil)
	return out, err
}

// VMCreate creates (and unless NoStart, starts) a VM, reporting progress to onEvent.
func (c *Client) VMCreate(ctx context.Context, req VMCreateRequest, onEvent func(Event)) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMCreate, req, &out, onEvent)
	return out, err
}

// VMList lists every VM.
func (c *Client) VMList(ctx context.Context) ([]VM, error) {
	var out VMList
	err := c.Call(ctx, MethodVMList, nil, &out, nil)
	return out.VMs, err
}

// VMShow returns one VM.
func (c *Client) VMShow(ctx context.Context, name string) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMShow, VMRef{Name: name}, &out, nil)
	return out, err
}

// VMStart boots a stopped VM.
func (c *Client) VMStart(ctx context.Context, name string, onEvent func(Event)) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMStart, VMRef{Name: name}, &out, onEvent)
	return out, err
}

// VMStop shuts a VM down.
func (c *Client) VMStop(ctx context.Context, req VMStopRequest, onEvent func(Event)) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMStop, req, &out, onEvent)
	return out, err
}

// VMRestart stops and starts a VM.
func (c *Client) VMRestart(ctx context.Context, name string, onEvent func(Event)) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMRestart, VMRef{Name: name}, &out, onEvent)
	return out, err
}

// VMDelete stops a VM if needed and removes it with its disk (and, with
// req.Force, its snapshots).
func (c *Client) VMDelete(ctx context.Context, req VMDeleteRequest, onEvent func(Event)) error {
	return c.Call(ctx, MethodVMDelete, req, nil, onEvent)
}

// VMLogs returns the tail of a VM's serial console log.
func (c *Client) VMLogs(ctx context.Context, req VMLogsRequest) (VMLogs, error) {
	var out VMLogs
	err := c.Call(ctx, MethodVMLogs, req, &out, nil)
	return out, err
}

// ImageList lists images.
func (c *Client) ImageList(ctx context.Context) ([]Image, error) {
	var out ImageList
	err := c.Call(ctx, MethodImageList, nil, &out, nil)
	return out.Images, err
}

// ImageImport copies a kernel, optional initrd and rootfs into the image store.
func (c *Client) ImageImport(ctx context.Context, req ImageImportRequest, onEvent func(Event)) (Image, error) {
	var out Image
	err := c.Call(ctx, MethodImageImport, req, &out, onEvent)
	return out, err
}

// ImageDelete removes an image no VM uses.
func (c *Client) ImageDelete(ctx context.Context, name string) error {
	return c.Call(ctx, MethodImageDelete, ImageRef{Name: name}, nil, nil)
}

// WatchEvents streams the daemon's change events (VM state changes,
// deletions, image changes) to onEvent until ctx is canceled or the daemon
// goes away. The first event is a "hello" with Kind "watch.started", so a
// caller knows the subscription is live before it lists current state.
func (c *Client) WatchEvents(ctx context.Context, onEvent func(Event)) error {
	return c.Call(ctx, MethodEventsWatch, nil, nil, onEvent)
}

// VMPortForward adds or removes a persistent port forward.
func (c *Client) VMPortForward(ctx context.Context, req VMPortForwardRequest) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMPortForward, req, &out, nil)
	return out, err
}
