package main

import (
	"fmt"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
)

// cpuTicks is the CPU time (user + system, clock ticks) of the node's relays, read from /proc:
// the API server, and the kubelet with containerd and its shims. Both methods pay them per
// byte; WebSocket makes the API server translate each stream to SPDY.
type cpuTicks struct{ apiserver, node, s3 int64 }

func relaysCPU() cpuTicks {
	// A shim's command name is cut to 15 characters: containerd-shim.
	// The S3 server (the chart's versitygw) runs on the same two cores.
	return cpuTicks{apiserver: ticks("kube-apiserver"), node: ticks("kubelet") + ticks("containerd") + ticks("containerd-shim"), s3: ticks("versitygw")}
}

// seconds converts the difference to CPU seconds (USER_HZ is 100 on Linux).
func (t cpuTicks) since(before cpuTicks) (apiserver, node, s3 float64) {
	return float64(t.apiserver-before.apiserver) / 100, float64(t.node-before.node) / 100, float64(t.s3-before.s3) / 100
}

// ticks sums utime+stime of the processes named name (0 when none).
func ticks(name string) int64 {
	out, _ := osexec.Command("pgrep", "-x", name).Output()
	var sum int64
	for _, pid := range strings.Fields(string(out)) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%s/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces) start at ") ".
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			k, _ := strconv.ParseInt(f[12], 10, 64)
			sum += u + k
		}
	}
	return sum
}
