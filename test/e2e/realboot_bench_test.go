package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// BenchmarkCreateToAgentReady times `vm create` of the busybox image until
// the VM is running (its agent answered and the guest is set up), one VM at
// a time, and splits each create by the daemon's progress events:
//
//	prepare  request → "network": validation, record, disk clone, state
//	launch   "network" → "agent": tap, VMM process start until it runs
//	boot     "agent" → "agent-ready": kernel, initrd, init, agent answers
//	setup    "agent-ready" → response: SSH key and host key, state, reply
//
// banger's own work is prepare + setup (+ the tap); the VMM and the guest's
// is launch + boot. Run with
//
//	go test -run '^$' -bench CreateToAgentReady -benchtime 5x ./test/e2e
//
// (root and QEMU; BANGER_E2E_VMM=firecracker on a KVM host).
func BenchmarkCreateToAgentReady(b *testing.B) {
	vmm := needRealBoot(b)
	h := newRealHost(b, vmm, busyboxBootTimeout)
	h.buildImage("default", "busybox")
	h.daemonPID()
	var sum struct{ prepare, launch, boot, setup, total time.Duration }
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("bench-%d", i)
		stages, total, err := h.createTimed(api.VMCreateRequest{Name: name})
		if err != nil {
			b.Fatalf("create %s: %v%s", name, err, h.diagnostics())
		}
		at := map[string]time.Duration{}
		for _, s := range stages {
			at[s.stage] = s.at
		}
		for _, s := range []string{"network", "agent", "agent-ready"} {
			if _, ok := at[s]; !ok {
				b.Fatalf("create %s reported no %q event: %s", name, s, formatStages(stages, total))
			}
		}
		sum.prepare += at["network"]
		sum.launch += at["agent"] - at["network"]
		sum.boot += at["agent-ready"] - at["agent"]
		sum.setup += total - at["agent-ready"]
		sum.total += total
		b.Logf("%s: %s", name, formatStages(stages, total))
		b.StopTimer()
		h.must("vm", "delete", "--force", name)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(sum.prepare.Seconds()/n, "prepare-s/op")
	b.ReportMetric(sum.launch.Seconds()/n, "launch-s/op")
	b.ReportMetric(sum.boot.Seconds()/n, "boot-s/op")
	b.ReportMetric(sum.setup.Seconds()/n, "setup-s/op")
	b.ReportMetric((sum.prepare+sum.setup).Seconds()/n, "banger-s/op")
	b.ReportMetric((sum.launch+sum.boot).Seconds()/n, "vmm+guest-s/op")
	b.ReportMetric(sum.total.Seconds()/n, "total-s/op")
}
