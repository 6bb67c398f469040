package localprovider

import (
	"bytes"
	"log/slog"
	"unicode/utf8"
)

// maxLine is the longest line of a function's output logged; the rest of
// a longer line is dropped.
const maxLine = 4096

// output logs what a function process writes, one record per line. Write
// is called from one goroutine at a time: exec's copying from the
// process's pipe, or the tail of its log file with a state directory;
// flush once the process has exited.
type output struct {
	log  *slog.Logger // carries the function's id and region
	line []byte       // the line so far, at most maxLine bytes
	cut  bool         // the line was longer than maxLine
}

// Write logs every line b completes and keeps the rest for the next
// call. It never fails, so the process's output is always drained.
func (o *output) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		end := bytes.IndexByte(b, '\n')
		part := b
		if end >= 0 {
			part = b[:end]
		}
		room := maxLine - len(o.line)
		if o.cut {
			room = 0 // the rest of a cut line is dropped
		}
		if len(part) > room {
			for room > 0 && !utf8.RuneStart(part[room]) {
				room--
			}
			part, o.cut = part[:room], true
		}
		o.line = append(o.line, part...)
		if end < 0 {
			break
		}
		o.flush()
		b = b[end+1:]
	}
	return n, nil
}

// flush logs the line so far, if any.
func (o *output) flush() {
	line := string(bytes.TrimRight(o.line, "\r"))
	switch {
	case o.cut:
		o.log.Info(line, "truncated", true)
	case line != "":
		o.log.Info(line)
	}
	o.line, o.cut = o.line[:0], false
}
