package privileged

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
)

// The operation menu, declared once. Each Op says its wire name, its
// request and result types, how a request is checked (the same check on
// both sides of the socket), the policy Local applies to it, its effect on
// the machine, how it travels when it carries descriptors, and who may call
// it. The client, the wire decoding, the server's dispatch, Unavailable and
// the Backend all follow from this table: adding an operation means one
// entry here, its effect (a SystemBackend method) and its test.

// None is the request of an operation that takes no arguments, and the
// result of one that returns nothing.
type None struct{}

// Op is one operation on the menu, taking Req and answering Resp.
type Op[Req, Resp any] struct {
	name string
	// doing says what the operation does, for errors ("creating a tap").
	doing string
	// check validates a request's shape; nil for an operation without
	// arguments.
	check func(Req) error
	// run applies Local's policy to a checked request and, if the policy
	// allows it, calls effect (the operation's effect, through Local's
	// Backend). nil runs effect under Local's lock.
	run func(l *Local, ctx context.Context, req Req, effect func(Req) (Resp, error)) (Resp, error)
	// effect is what the operation does to the machine, given a request
	// run let through and whom it acts for (from the policy). nil for
	// helper.info, which the helper answers itself, and for the jail
	// operations, which run composes from other effects.
	effect func(b SystemBackend, ctx context.Context, at serving, req Req) (Resp, error)
	// carry maps a request that holds descriptors to the flat arguments and
	// descriptors it travels as; nil when Req travels as itself.
	carry *wireForm[Req]
	// public lets uid 0 call the operation, not only the owner.
	public bool
}

// Name is the operation's name on the wire.
func (o *Op[Req, Resp]) Name() string { return o.name }

// Ops performs operations of the menu: Local in-process, Client over the
// helper socket, or Unavailable. Call and Do are how callers use it.
type Ops interface {
	// perform runs a request of op (req is op's Req) and returns op's Resp.
	perform(ctx context.Context, op entry, req any) (any, error)
}

// Call performs op with req through ops and returns its result.
func Call[Req, Resp any](ctx context.Context, ops Ops, op *Op[Req, Resp], req Req) (Resp, error) {
	out, err := ops.perform(ctx, op, req)
	resp, _ := out.(Resp)
	return resp, err
}

// Do performs op, which returns nothing, with req through ops.
func Do[Req any](ctx context.Context, ops Ops, op *Op[Req, None], req Req) error {
	_, err := ops.perform(ctx, op, req)
	return err
}

// entry is an Op with its types erased, as the server, the decoder and
// the implementations of Ops see it.
type entry interface {
	opName() string
	what() string
	mayCall(owner bool) bool
	// validate checks req (a Req).
	validate(req any) error
	// runLocal performs a validated req in l.
	runLocal(ctx context.Context, l *Local, req any) (any, error)
	// applyOn performs the operation's effect for req (a Req) on b.
	applyOn(ctx context.Context, b SystemBackend, at serving, req any) (any, error)
	// newArgs returns a fresh pointer to the wire arguments, nil when the
	// operation takes none.
	newArgs() any
	// encode turns req into wire arguments (nil for none) and descriptors.
	encode(req any) (args any, files []*os.File)
	// fileCount is how many descriptors decoded args say arrive with them;
	// -1 when the arguments cannot say.
	fileCount(args any) int
	// decode rebuilds a Req from decoded args and the descriptors.
	decode(args any, files []*os.File) (any, error)
	// decodeResult reads a Resp from the wire; result encodes a Resp for
	// it (nil when there is nothing to send).
	decodeResult(raw json.RawMessage) (any, error)
	result(resp any) any
}

// wireForm is how a request holding descriptors travels: flat JSON
// arguments of its own type plus SCM_RIGHTS descriptors in a fixed order.
type wireForm[Req any] struct {
	newArgs   func() any
	encode    func(Req) (any, []*os.File)
	fileCount func(args any) int
	decode    func(args any, files []*os.File) (Req, error)
}

// carried builds the wireForm of requests that travel as W: toWire splits a
// request into W and its descriptors, count says how many descriptors a
// decoded W arrives with, fromWire puts them back together.
func carried[Req, W any](toWire func(Req) (W, []*os.File), count func(W) int, fromWire func(W, []*os.File) (Req, error)) *wireForm[Req] {
	return &wireForm[Req]{
		newArgs: func() any { return new(W) },
		encode: func(r Req) (any, []*os.File) {
			w, files := toWire(r)
			return &w, files
		},
		fileCount: func(args any) int { return count(*args.(*W)) },
		decode:    func(args any, files []*os.File) (Req, error) { return fromWire(*args.(*W), files) },
	}
}

func (o *Op[Req, Resp]) opName() string { return o.name }
func (o *Op[Req, Resp]) what() string   { return o.doing }

func (o *Op[Req, Resp]) mayCall(owner bool) bool { return owner || o.public }

// takesArgs is false for operations whose request is None: their
// requests have no "args".
func (o *Op[Req, Resp]) takesArgs() bool { return reflect.TypeFor[Req]() != reflect.TypeFor[None]() }

func (o *Op[Req, Resp]) validate(req any) error {
	r, ok := req.(Req)
	if !ok {
		return fmt.Errorf("%s: request is %T, not %T", o.name, req, r)
	}
	if o.check == nil {
		return nil
	}
	return o.check(r)
}

func (o *Op[Req, Resp]) runLocal(ctx context.Context, l *Local, req any) (any, error) {
	effect := func(r Req) (Resp, error) { return apply(ctx, l, o, r) }
	switch {
	case o.run != nil:
		return o.run(l, ctx, req.(Req), effect)
	case o.effect != nil:
		var resp Resp
		err := l.locked(func() (err error) {
			resp, err = effect(req.(Req))
			return err
		})
		return resp, err
	}
	return nil, fmt.Errorf("%w: %s is answered by the root helper itself", ErrNotAvailable, o.name)
}

func (o *Op[Req, Resp]) applyOn(ctx context.Context, b SystemBackend, at serving, req any) (any, error) {
	if o.effect == nil {
		return nil, fmt.Errorf("%w: %s has no effect of its own", ErrNotAvailable, o.name)
	}
	return o.effect(b, ctx, at, req.(Req))
}

// apply performs op's effect for req, which Local's policy let through,
// on Local's Backend.
func apply[Req, Resp any](ctx context.Context, l *Local, op *Op[Req, Resp], req Req) (Resp, error) {
	out, err := l.backend.apply(ctx, op, l.serving(), req)
	resp, _ := out.(Resp)
	return resp, err
}

func (o *Op[Req, Resp]) newArgs() any {
	switch {
	case o.carry != nil:
		return o.carry.newArgs()
	case o.takesArgs():
		return new(Req)
	}
	return nil
}

func (o *Op[Req, Resp]) encode(req any) (any, []*os.File) {
	r := req.(Req)
	switch {
	case o.carry != nil:
		return o.carry.encode(r)
	case o.takesArgs():
		return &r, nil
	}
	return nil, nil
}

func (o *Op[Req, Resp]) fileCount(args any) int {
	if o.carry == nil {
		return 0
	}
	return o.carry.fileCount(args)
}

func (o *Op[Req, Resp]) decode(args any, files []*os.File) (any, error) {
	switch {
	case o.carry != nil:
		return o.carry.decode(args, files)
	case o.takesArgs():
		return *args.(*Req), nil
	}
	return None{}, nil
}

func (o *Op[Req, Resp]) decodeResult(raw json.RawMessage) (any, error) {
	var out Resp
	if len(raw) > 0 && reflect.TypeFor[Resp]() != reflect.TypeFor[None]() {
		if err := json.Unmarshal(raw, &out); err != nil {
			return out, fmt.Errorf("root helper: %s: unreadable result: %w", o.name, err)
		}
	}
	return out, nil
}

func (o *Op[Req, Resp]) result(resp any) any {
	if _, ok := resp.(None); ok || resp == nil {
		return nil
	}
	return resp
}

// nothing turns an error into an operation's (None, error) answer.
func nothing(err error) (None, error) { return None{}, err }

// onBridge is a request about one bridge.
type onBridge interface{ bridgeName() string }

func (s NATSpec) bridgeName() string       { return s.Bridge }
func (s IsolationSpec) bridgeName() string { return s.Bridge }
func (s TapSpec) bridgeName() string       { return s.Bridge }

// onOwnBridge is the run of a request whose bridge must not be another
// instance's.
func onOwnBridge[S onBridge](l *Local, ctx context.Context, s S, effect func(S) (None, error)) (None, error) {
	return nothing(l.ownBridge(ctx, s.bridgeName(), func() error {
		_, err := effect(s)
		return err
	}))
}

// The menu. Names are the wire's and never change meaning: an older daemon
// may talk to a newer helper in the middle of an update (menu_test.go pins
// the bytes). Every run is given a request its check accepted.
var (
	// OpInfo: pid, build, the uid served and the jailer launched. The
	// helper answers it itself; uid 0 may ask (`sudo banger system status`).
	OpInfo = &Op[None, HelperInfo]{name: "helper.info", doing: "asking the root helper who it is", public: true}

	// OpEnsureBridge creates the bridge if missing, marks it as this
	// instance's, gives it the subnet's gateway (first host address) and
	// sets it up; idempotent.
	OpEnsureBridge = &Op[BridgeSpec, None]{name: "bridge.ensure", doing: "creating the bridge",
		check: BridgeSpec.Validate, effect: SystemBackend.ensureBridge}
	// OpDeleteBridge removes this instance's bridge; a missing one is not
	// an error.
	OpDeleteBridge = &Op[Named, None]{name: "bridge.delete", doing: "deleting the bridge",
		check:  func(n Named) error { return ValidBridgeName(n.Name) },
		effect: SystemBackend.deleteBridge}
	// OpCreateTap creates a tap owned by the owner and enslaves it to the
	// bridge; an existing tap of the owner's is adopted.
	OpCreateTap = &Op[TapSpec, None]{name: "tap.create", doing: "creating a tap",
		check: TapSpec.Validate, run: (*Local).createTap, effect: SystemBackend.createTap}
	// OpDeleteTap removes a tap the owner owns; a missing one is not an
	// error.
	OpDeleteTap = &Op[Named, None]{name: "tap.delete", doing: "deleting a tap",
		check:  func(n Named) error { return ValidTapName(n.Name) },
		effect: SystemBackend.deleteTap}
	// OpEnsureNAT masquerades the subnet leaving through anything but the
	// bridge, in the bridge's own nftables tables; idempotent.
	OpEnsureNAT = &Op[NATSpec, None]{name: "nat.ensure", doing: "setting up NAT",
		check: NATSpec.Validate, run: onOwnBridge[NATSpec], effect: SystemBackend.ensureNAT}
	// OpRemoveNAT deletes the bridge's nftables tables (NAT, forwarding,
	// guest rules) and nothing else; missing tables are not an error.
	OpRemoveNAT = &Op[NATSpec, None]{name: "nat.remove", doing: "removing NAT",
		check: NATSpec.Validate, run: onOwnBridge[NATSpec], effect: SystemBackend.removeNAT}
	// OpIsolate admits a VM's port (firewall.Admit): pinned to its MAC and
	// address, and cut off from the other VMs when Isolated. OpUnisolate
	// (firewall.Evict) undoes both. Idempotent.
	OpIsolate = &Op[IsolationSpec, None]{name: "firewall.isolate", doing: "admitting a VM's port to the bridge firewall",
		check: IsolationSpec.Validate, run: onOwnBridge[IsolationSpec], effect: SystemBackend.isolate}
	OpUnisolate = &Op[IsolationSpec, None]{name: "firewall.unisolate", doing: "evicting a VM's port from the bridge firewall",
		check: IsolationSpec.Validate, run: onOwnBridge[IsolationSpec], effect: SystemBackend.unisolate}
	// OpApplyEgress replaces a VM's egress policy (firewall.ApplyEgress):
	// its own table, rebuilt in one transaction; mode "allow" leaves none.
	// OpLearnEgress adds the addresses its allowed names resolved to, with
	// their TTLs (firewall.Learn). Firewall.unisolate removes the table.
	OpApplyEgress = &Op[EgressSpec, None]{name: "egress.apply", doing: "applying a VM's egress policy",
		check: EgressSpec.Validate, run: onOwnBridge[EgressSpec], effect: SystemBackend.applyEgress,
		carry: carried(EgressSpec.wire, noFiles[egressArgs], egressArgs.spec)}
	OpLearnEgress = &Op[LearnSpec, None]{name: "egress.learn", doing: "allowing a VM's resolved addresses",
		check: LearnSpec.Validate, run: onOwnBridge[LearnSpec], effect: SystemBackend.learnEgress,
		carry: carried(LearnSpec.wire, noFiles[learnArgs], learnArgs.spec)}
	// OpEnableIPForward turns on IPv4 forwarding. There is deliberately no
	// "disable": other software on the host (containers) relies on it too.
	OpEnableIPForward = &Op[None, None]{name: "ipforward.enable", doing: "enabling IP forwarding",
		effect: SystemBackend.enableIPForward}
	// OpConfigureResolver routes the host's queries for the domain (and only
	// those) on the link to the server, port 53 (systemd-resolved);
	// OpRevertResolver drops the link's configuration. A host without
	// systemd-resolved answers ErrNotAvailable: guests resolve names anyway.
	OpConfigureResolver = &Op[ResolverSpec, None]{name: "resolver.configure", doing: "configuring DNS",
		check: ResolverSpec.Validate, effect: SystemBackend.configureResolver}
	OpRevertResolver = &Op[LinkRef, None]{name: "resolver.revert", doing: "reverting DNS",
		check:  func(r LinkRef) error { return ValidBridgeName(r.Link) },
		effect: SystemBackend.revertResolver}
	// OpAttachLoop attaches a loop device to the backing file the caller
	// opened (passed as a descriptor, never a path) and returns /dev/loopN.
	OpAttachLoop = &Op[LoopAttach, DevicePath]{name: "loop.attach", doing: "attaching a loop device",
		check: LoopAttach.Validate, run: (*Local).attachLoop, effect: SystemBackend.attachLoop,
		carry: carried(
			func(s LoopAttach) (LoopAttach, []*os.File) { f := s.Backing; s.Backing = nil; return s, []*os.File{f} },
			func(LoopAttach) int { return 1 },
			func(s LoopAttach, files []*os.File) (LoopAttach, error) { s.Backing = files[0]; return s, nil })}
	// OpDetachLoop detaches a loop device backed by a file in the state
	// dir.
	OpDetachLoop = &Op[DeviceRef, None]{name: "loop.detach", doing: "detaching a loop device",
		check: func(d DeviceRef) error { return ValidLoopDevice(d.Device) },
		run:   (*Local).detachLoop, effect: SystemBackend.detachLoop}
	// OpCreateSnapshot makes the device-mapper snapshot over the origin and
	// COW loops, hands it to the owner and returns its path;
	// OpRemoveSnapshot removes one (a missing one is not an error).
	OpCreateSnapshot = &Op[SnapshotSpec, DevicePath]{name: "snapshot.create", doing: "creating a device-mapper snapshot",
		check: SnapshotSpec.Validate, run: (*Local).createSnapshot, effect: SystemBackend.createSnapshot}
	OpRemoveSnapshot = &Op[Named, None]{name: "snapshot.remove", doing: "removing a device-mapper snapshot",
		check: func(n Named) error { return ValidSnapshotName(n.Name) },
		run:   (*Local).removeSnapshot, effect: SystemBackend.removeSnapshot}
	// OpChown and OpChmod change a socket or VM device beneath the runtime
	// dir.
	OpChown = &Op[ChownSpec, None]{name: "file.chown", doing: "changing a file's owner",
		check: ChownSpec.Validate, run: (*Local).chown, effect: SystemBackend.chown}
	OpChmod = &Op[ChmodSpec, None]{name: "file.chmod", doing: "changing a file's mode",
		check: ChmodSpec.Validate, run: (*Local).chmod, effect: SystemBackend.chmod}
	// OpLaunchJailer stages a VM's files (all descriptors) into a fresh
	// jail and starts Firecracker under the jailer; OpRemoveJail stops it
	// and removes the jail (a missing one is not an error). See jail.go.
	OpLaunchJailer = &Op[JailerLaunch, JailedVMM]{name: "jailer.launch", doing: "launching the jailer",
		check: JailerLaunch.Validate, run: (*Local).launchJailer,
		carry: carried(JailerLaunch.wire, jailerArgs.fileCount, jailerArgs.launch)}
	OpRemoveJail = &Op[VMRef, None]{name: "jail.remove", doing: "removing a jail",
		check: func(v VMRef) error { return ValidJailID(v.VMID) }, run: (*Local).removeJail}
)

// menu lists every operation, in a stable order (for docs and tests).
func menu() []entry {
	return []entry{OpInfo, OpEnsureBridge, OpDeleteBridge, OpCreateTap, OpDeleteTap,
		OpEnsureNAT, OpRemoveNAT, OpIsolate, OpUnisolate, OpApplyEgress, OpLearnEgress, OpEnableIPForward, OpConfigureResolver, OpRevertResolver,
		OpAttachLoop, OpDetachLoop, OpCreateSnapshot, OpRemoveSnapshot, OpChown, OpChmod,
		OpLaunchJailer, OpRemoveJail}
}

// lookup finds an operation by its wire name.
func lookup(name string) (entry, bool) {
	for _, e := range menu() {
		if e.opName() == name {
			return e, true
		}
	}
	return nil, false
}
