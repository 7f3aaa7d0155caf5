package testharness

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SelfCPU is the user+system CPU time this process has used so far.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// LoadAverage is the machine's 1-minute load average as /proc/loadavg gives it ("?" when it
// can't be read): a benchmark prints it, since other work on the machine skews every figure.
func LoadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// ProcessTreeCPU is the CPU time (user + system) a process has used, with that of its live
// children and of the children it has reaped: for the Temporal dev server, itself; for
// PostgreSQL's postmaster, every backend, including those whose connection has closed. A
// benchmark reads it before and after a phase to say what the phase cost each process, which
// holds on a machine busy with other work, where wall time does not. Zero when /proc can't be
// read.
func ProcessTreeCPU(pid int) time.Duration {
	self, ok := procStat(pid)
	if !ok {
		return 0
	}
	ticks := self.own + self.reaped
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if st, ok := procStat(child); ok && st.ppid == pid {
			ticks += st.own
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

type procTicks struct {
	ppid        int
	own, reaped int64
}

// procStat reads /proc/<pid>/stat: the parent, the process's own utime+stime and the
// cutime+cstime of the children it has waited for, in clock ticks.
func procStat(pid int) (procTicks, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procTicks{}, false
	}
	end := strings.LastIndexByte(string(b), ')')
	if end < 0 {
		return procTicks{}, false
	}
	f := strings.Fields(string(b[end+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procTicks{}, false
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	return procTicks{ppid: int(n(1)), own: n(11) + n(12), reaped: n(13) + n(14)}, true
}

// Pid is the dev server's process id (0 while it is stopped).
func (s *TemporalServer) Pid() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.Pid()
}

// CPU is the CPU time the cluster has used: the postmaster and its backends, live and ended.
func (pg *PG) CPU() time.Duration { return ProcessTreeCPU(pg.Pid()) }

// Pid is the postmaster's process id (0 while the cluster is stopped).
func (pg *PG) Pid() int {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.proc == nil {
		return 0
	}
	return pg.proc.Pid()
}
