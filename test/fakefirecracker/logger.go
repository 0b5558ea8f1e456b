package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logLevel orders Firecracker's log levels; a line is written when its level
// is at or below the configured one.
type logLevel int

const (
	levelOff logLevel = iota
	levelError
	levelWarning
	levelInfo
	levelDebug
	levelTrace
)

var levelNames = map[string]logLevel{
	"off": levelOff, "error": levelError, "warning": levelWarning,
	"info": levelInfo, "debug": levelDebug, "trace": levelTrace,
}

func (l logLevel) String() string {
	for name, lvl := range levelNames {
		if lvl == l {
			return strings.ToUpper(name)
		}
	}
	return "UNKNOWN"
}

func parseLevel(s string) (logLevel, error) {
	lvl, ok := levelNames[strings.ToLower(s)]
	if !ok {
		return 0, fmt.Errorf("invalid log level %q", s)
	}
	return lvl, nil
}

// vmmLog is the VMM's own log (not the guest console). Until a log_path is
// configured, lines go to stderr; real Firecracker writes them to stdout, but
// the fake keeps stdout for the serial console so tests can read it cleanly.
type vmmLog struct {
	mu        sync.Mutex
	id        string
	out       io.Writer
	stderr    io.Writer
	file      *os.File
	level     logLevel
	showLevel bool
}

func newVMMLog(id string, stderr io.Writer) *vmmLog {
	return &vmmLog{id: id, out: stderr, stderr: stderr, level: levelInfo}
}

// configure points the log at path. Like Firecracker, it opens the file
// without creating it: the caller must create the file (or FIFO) first, and
// a missing file is an error, not a silent new file.
func (l *vmmLog) configure(path, level string, showLevel bool) error {
	lvl := levelInfo
	if level != "" {
		var err error
		if lvl, err = parseLevel(level); err != nil {
			return err
		}
	}
	var file *os.File
	if path != "" {
		var err error
		file, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if file != nil {
		if l.file != nil {
			l.file.Close()
		}
		l.file, l.out = file, file
	}
	l.level, l.showLevel = lvl, showLevel
	return nil
}

// logf writes one line in Firecracker's shape:
// "<timestamp> [<instance id>:fc_api] message".
func (l *vmmLog) logf(lvl logLevel, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lvl > l.level || lvl == levelOff {
		return
	}
	tag := l.id + ":fc_api"
	if l.showLevel {
		tag += ":" + lvl.String()
	}
	ts := time.Now().UTC().Format("2006-01-02T15:04:05.000000000")
	fmt.Fprintf(l.out, "%s [%s] %s\n", ts, tag, fmt.Sprintf(format, args...))
}

func (l *vmmLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.Close()
		l.file, l.out = nil, l.stderr
	}
}
