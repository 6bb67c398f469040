package localprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"lightspeed/gateway/fleet"
)

// This file is the state directory's side of the provider: the machines'
// records, their log files, and the processes it adopts.

// maxLogSize bounds a machine's log file: past it, the file is emptied
// (its lines have gone to the provider's logger already).
const maxLogSize = 10 << 20

// How often the provider looks at what it cannot wait for: an adopted
// process (pollEvery; stopPollEvery once it was signalled, so that Stop,
// Destroy and Close see it gone at once) and a log file (tailEvery).
const (
	pollEvery     = 500 * time.Millisecond
	stopPollEvery = 20 * time.Millisecond
	tailEvery     = 100 * time.Millisecond
)

// tempPrefix starts the name of a record being written; one left behind
// by a gateway killed while writing it is removed by the next.
const tempPrefix = ".tmp-"

// machineRecord is a machine's record file, <StateDir>/<id>.json.
type machineRecord struct {
	ID      string            `json:"id"`
	Region  string            `json:"region"`
	Port    int               `json:"port"`
	Env     map[string]string `json:"env,omitempty"` // the spec's Env
	Image   string            `json:"image"`
	Created time.Time         `json:"created"`
	State   fleet.State       `json:"state"`
	PID     int               `json:"pid,omitempty"`   // its process; 0: none runs
	Start   uint64            `json:"start,omitempty"` // the process's start time, /proc/<pid>/stat field 22
}

func (p *Provider) recordPath(id string) string { return filepath.Join(p.stateDir, id+".json") }
func (p *Provider) logPath(id string) string    { return filepath.Join(p.stateDir, id+".log") }

// save writes m's record if the provider keeps records. p.mu is held. A
// record that cannot be written is logged, and the machine runs on: only
// a later gateway's adoption of it suffers.
func (p *Provider) save(m *machine) {
	if p.stateDir == "" {
		return
	}
	rec := machineRecord{
		ID:      m.ID,
		Region:  m.Region,
		Port:    m.Port,
		Env:     m.specEnv,
		Image:   m.Image,
		Created: m.Created,
		State:   m.State,
	}
	if m.run != nil {
		rec.PID, rec.Start = m.run.pid, m.run.start
	}
	if err := writeRecord(p.stateDir, rec); err != nil {
		p.log.Error("local: machine record not written", "function", m.ID, "err", err)
	}
}

// writeRecord writes rec into dir atomically: a temporary file renamed
// over the old record, so that a gateway killed meanwhile leaves the old
// record or the new one, never a part. It is not synced to disk: it
// guards against the gateway dying, not the machine it runs on.
func writeRecord(dir string, rec machineRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+rec.ID+".*") // mode 0600: the env holds secrets
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename it is gone already
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, rec.ID+".json"))
}

// readRecord reads the record at path, which must be machine id's.
func readRecord(path, id string) (machineRecord, error) {
	var rec machineRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, err
	}
	switch {
	case rec.ID != id:
		return rec, fmt.Errorf("the record of %q is named %s", rec.ID, filepath.Base(path))
	case rec.Port < 1 || rec.Port > 65535:
		return rec, fmt.Errorf("port %d is not a UDP port", rec.Port)
	case rec.Created.IsZero():
		return rec, errors.New("no created time")
	case rec.PID < 0:
		return rec, fmt.Errorf("pid %d", rec.PID)
	}
	return rec, nil
}

// remove removes machine id's record and log file, if the provider keeps
// them. p.mu is held.
func (p *Provider) remove(id string) {
	if p.stateDir == "" {
		return
	}
	for _, path := range []string{p.recordPath(id), p.logPath(id)} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("local: machine record not removed", "function", id, "err", err)
		}
	}
}

// load reads the records of the state directory (made if missing): it
// adopts the machines whose process still runs and lists the others
// Stopped. New calls it.
func (p *Provider) load() error {
	if err := os.MkdirAll(p.stateDir, 0o700); err != nil {
		return fmt.Errorf("local: state directory: %w", err)
	}
	entries, err := os.ReadDir(p.stateDir)
	if err != nil {
		return fmt.Errorf("local: state directory: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(p.stateDir, name)
		switch {
		case strings.HasPrefix(name, tempPrefix):
			os.Remove(path)
		case strings.HasSuffix(name, ".json") && e.Type().IsRegular():
			rec, err := readRecord(path, strings.TrimSuffix(name, ".json"))
			if err != nil {
				p.log.Error("local: malformed machine record removed", "file", path, "err", err)
				if err := os.Remove(path); err != nil {
					p.log.Warn("local: machine record not removed", "file", path, "err", err)
				}
				continue
			}
			p.loadRecord(rec)
		}
	}
	return nil
}

// loadRecord makes rec's machine: adopted if its process still runs,
// Stopped otherwise. p.mu is held.
func (p *Provider) loadRecord(rec machineRecord) {
	m := &machine{
		Machine: fleet.Machine{
			ID:      rec.ID,
			Region:  rec.Region,
			State:   fleet.Stopped,
			Port:    rec.Port,
			Image:   rec.Image,
			Created: rec.Created,
		},
		specEnv: rec.Env,
	}
	if m.Image == "" {
		m.Image = p.command[0]
	}
	m.env = p.environ(fleet.Spec{Region: rec.Region, Port: rec.Port, Env: rec.Env}, rec.ID)
	p.machines[m.ID] = m
	// The pid alone could be another process's by now: its start time
	// and its environment tell that it is still the one recorded.
	if running(rec.PID, rec.Start) && hasEnv(rec.PID, "LS_MACHINE_ID="+rec.ID) {
		p.adopt(m, rec.PID, rec.Start)
		return
	}
	p.save(m)
	p.log.Info("local: function found stopped", "function", m.ID, "region", m.Region, "port", m.Port, "was", rec.State)
}

// adopt makes pid, started by an earlier provider, m's process: the
// provider follows its log file from its end and polls for its exit.
// p.mu is held.
func (p *Provider) adopt(m *machine, pid int, start uint64) {
	ctx, cancel := context.WithCancel(p.ctx)
	r := &run{pid: pid, start: start, stop: cancel, done: make(chan struct{})}
	m.run, m.State = r, fleet.Started
	finish := func() {}
	if t, err := p.follow(m); err != nil {
		p.log.Warn("local: function's output not followed", "function", m.ID, "err", err)
	} else {
		finish = t.close
	}
	p.save(m)
	p.runs.Go(func() { p.watch(ctx, m, r, finish) })
	p.log.Info("local: function adopted", "function", m.ID, "region", m.Region, "port", m.Port, "pid", pid)
}

// watch polls r, m's adopted process, until it exits: it is not the
// provider's child, so there is no waiting for it. When ctx ends (the
// provider asks it to exit) it gets SIGTERM, then SIGKILL after the
// grace. Its exit status is unknown, so an exit nobody asked for is a
// failure.
func (p *Provider) watch(ctx context.Context, m *machine, r *run, finish func()) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	asked := ctx.Done()
	var kill <-chan time.Time
	for running(r.pid, r.start) {
		select {
		case <-asked:
			asked = nil
			p.signal(m, r, syscall.SIGTERM)
			timer := time.NewTimer(p.grace)
			defer timer.Stop()
			kill = timer.C
			tick.Reset(stopPollEvery)
		case <-kill:
			kill = nil
			p.signal(m, r, syscall.SIGKILL)
		case <-tick.C:
		}
	}
	finish()
	r.stop()
	p.exited(m, r, "unknown (adopted, not a child)", false)
}

// signal sends sig to r, m's adopted process, logging a failure.
func (p *Provider) signal(m *machine, r *run, sig syscall.Signal) {
	if err := signalProc(r.pid, r.start, sig); err != nil {
		p.log.Warn("local: function not signalled", "function", m.ID, "pid", r.pid, "signal", sig.String(), "err", err)
	}
}

// openLog opens machine id's log file for a process to append to,
// emptied first if it grew past maxLogSize.
func (p *Provider) openLog(id string) (*os.File, error) {
	f, err := os.OpenFile(p.logPath(id), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > maxLogSize {
		f.Truncate(0)
	}
	return f, nil
}

// tail follows a machine's log file and logs each line written to it
// through output, so that lines are bounded as from a pipe.
type tail struct {
	f    *os.File
	out  *output
	quit chan struct{} // closed: read the rest, then end
	done chan struct{} // closed once ended
}

// follow starts following m's log file from its end.
func (p *Provider) follow(m *machine) (*tail, error) {
	// Read and write: tail empties it past maxLogSize.
	f, err := os.OpenFile(p.logPath(m.ID), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, err
	}
	t := &tail{f: f, out: &output{log: p.functionLog(m)}, quit: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t, nil
}

// run reads the file every tailEvery until close.
func (t *tail) run() {
	defer close(t.done)
	defer t.f.Close()
	buf := make([]byte, 32<<10)
	tick := time.NewTicker(tailEvery)
	defer tick.Stop()
	for {
		t.read(buf)
		select {
		case <-t.quit:
			t.read(buf) // the last the process wrote
			t.out.flush()
			return
		case <-tick.C:
		}
	}
}

// read logs what was written since the last read. Past maxLogSize it
// empties the file: its writers append (O_APPEND), so they go on at its
// new start; what one writes between the last read and the cut is lost.
func (t *tail) read(buf []byte) {
	for {
		n, err := t.f.Read(buf)
		t.out.Write(buf[:n])
		if err != nil || n == 0 {
			break
		}
	}
	off, err := t.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return
	}
	if fi, err := t.f.Stat(); err == nil && fi.Size() < off {
		t.f.Seek(0, io.SeekStart) // emptied by someone else
		return
	}
	if off >= maxLogSize && t.f.Truncate(0) == nil {
		t.f.Seek(0, io.SeekStart)
	}
}

// close reads what is left, logs a last line without a newline, and
// stops following. Call it once the process has exited.
func (t *tail) close() {
	close(t.quit)
	<-t.done
}
