package glass

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Join is how a page opened in the middle of a GOP (Options.JoinAt)
// started and played.
type Join struct {
	// Opened is when the page was opened (wall clock).
	Opened time.Time
	// Keyframe is the RTP timestamp of the last keyframe the publisher
	// sent before Opened, the one the function had cached; AfterKeyframe
	// is how long before Opened it was sent.
	Keyframe      uint32
	AfterKeyframe time.Duration
	// NextKeyframe is the RTP timestamp of the first keyframe the
	// publisher sent after Opened and NextKeyframeAfter when, from
	// Opened; HasNextKeyframe is false when none was sent during the run.
	NextKeyframe      uint32
	NextKeyframeAfter time.Duration
	HasNextKeyframe   bool

	// FirstFrame is the RTP timestamp of the first presented frame, and
	// FirstFrameIndex its place in the source counted from Keyframe (0:
	// the keyframe itself; -1: not a frame the stack sent after Keyframe).
	// FirstPresentedFrames is its metadata.presentedFrames: above 1 when
	// the page presented frames before the first callback ran.
	FirstFrame           uint32
	FirstFrameIndex      int
	FirstPresentedFrames int
	// Cached is true when FirstFrame comes before NextKeyframe (or no
	// keyframe was sent after Opened during the run): the page started
	// from the cached keyframe, not from the next live one.
	Cached bool
	// FromOpen is from Opened to the presentationTime of the first
	// requestVideoFrameCallback; FromOffer from the WHEP offer's POST to
	// it (zero when the page's resource timing did not say). The
	// callback's frame is the latest the page presented by then, so the
	// very first was presented at most that late.
	FromOpen, FromOffer time.Duration
	// From Opened: the WHEP offer's POST (OfferAt) and its answer
	// (AnswerAt), by the page's resource timing.
	OfferAt, AnswerAt time.Duration
	// Metadata, Loaded and Playing are from Opened to the <video>'s first
	// loadedmetadata (its player made a first frame current), loadeddata
	// and playing events; zero when they did not fire.
	Metadata, Loaded, Playing time.Duration

	// CaughtUp is true when the burst caught up with the live stream: at
	// the first presented frame (CatchUpFrame) whose send → presentation
	// delay is at most the measurement's median plus one frame interval.
	// CatchUp is from the first presented frame to that one.
	CaughtUp     bool
	CatchUpFrame uint32
	CatchUp      time.Duration
	// BurstDropped counts the frames up to CatchUpFrame (itself included)
	// that the compositor never drew (droppedVideoFrames: replaced before
	// the next draw): the burst comes faster than the page shows frames.
	BurstDropped int
	// BurstFrames and BurstReceived are the source frames from the first
	// presented frame to CatchUpFrame, and the time between the arrivals
	// (receiveTime) of the two: the pace at which the burst came, which
	// the function means to be 12 times real time. Zero when the first
	// presented frame is CatchUpFrame or receive times are missing.
	BurstFrames   int
	BurstReceived time.Duration
	// From CatchUpFrame on: Callbacks counts the callbacks and Presented
	// the frames presented (metadata.presentedFrames: Chromium counts
	// every frame it makes the video's current one, which the compositor
	// then draws unless another replaces it first). Jumps counts the
	// callbacks whose frame is not the source frame right after the
	// previous callback's: the page's main thread missed a rendering step,
	// or frames were missing. Skipped counts the source frames never
	// presented; Dropped the presented frames after CatchUpFrame the
	// compositor never drew (droppedVideoFrames: replaced before the next
	// draw, as when two frames arrive within one refresh). Hitches lists
	// each place of a jump or a drop. Unknown counts the callbacks whose
	// frame the stack has no record of, Backwards those whose frame did
	// not come after the previous one.
	Callbacks, Presented int
	Jumps                int
	Skipped, Dropped     int
	Hitches              []Hitch
	Unknown, Backwards   int

	// DecodeSamples counts the samples of the inbound-rtp statistics taken
	// at every poll from the first frame on; DecodeStalls the samples
	// whose framesDecoded did not grow over the one before.
	// FramesDecoded is the growth from the first sample to the last.
	DecodeSamples, DecodeStalls, FramesDecoded int
	// FreezesAfterFirst is the growth of freezeCount from the first
	// sample to the last.
	FreezesAfterFirst int
}

// Hitch is a place between two callbacks where the source jumped or the
// compositor dropped a frame.
type Hitch struct {
	Callback int       // the later callback, counted from the first checked (0)
	After    uint32    // the RTP timestamp of the earlier callback's frame
	Frames   int       // source frames between the two that no callback saw
	Skipped  int       // source frames between the two never presented
	Dropped  int       // frames the compositor dropped between the two callbacks
	At       time.Time // presentation of the later callback's frame
}

// source is what the stack sent: its frames in sending order and its
// keyframes.
type source struct {
	frames    []record       // by send time
	index     map[uint32]int // index in frames by RTP timestamp
	keyframes []record       // by send time
	interval  time.Duration  // mean spacing of the frames' send times
}

// newSource orders the stack's records by send time and looks up the
// send times of the keyframes it announced.
func newSource(records map[uint32]record, keyframes []keyframe) *source {
	s := &source{index: map[uint32]int{}}
	for _, r := range records {
		s.frames = append(s.frames, r)
	}
	slices.SortFunc(s.frames, func(a, b record) int { return a.Sent.Compare(b.Sent) })
	for i, r := range s.frames {
		s.index[r.Timestamp] = i
	}
	if n := len(s.frames); n > 1 {
		s.interval = s.frames[n-1].Sent.Sub(s.frames[0].Sent) / time.Duration(n-1)
	}
	for _, k := range keyframes {
		if r, ok := records[k.Timestamp]; ok {
			s.keyframes = append(s.keyframes, r)
		}
	}
	slices.SortFunc(s.keyframes, func(a, b record) int { return a.Sent.Compare(b.Sent) })
	return s
}

// join analyzes how w's page started and played; steady is the send →
// presentation delay over the measurement.
func (s *source) join(w *watcher, steady Summary) *Join {
	j := &Join{Opened: w.opened, FirstFrameIndex: -1}
	key := -1 // index in s.frames of the cached keyframe
	for _, k := range s.keyframes {
		if k.Sent.After(w.opened) {
			j.NextKeyframe, j.NextKeyframeAfter, j.HasNextKeyframe = k.Timestamp, k.Sent.Sub(w.opened), true
			break
		}
		j.Keyframe, j.AfterKeyframe = k.Timestamp, w.opened.Sub(k.Sent)
		key = s.index[k.Timestamp]
	}
	if len(w.frames) == 0 {
		return j
	}
	first := w.frames[0]
	j.FirstFrame, j.FirstPresentedFrames = first.RTPTimestamp, first.PresentedFrames
	if i, ok := s.index[first.RTPTimestamp]; ok && first.HasTimestamp && key >= 0 && i >= key {
		j.FirstFrameIndex = i - key
	}
	j.Cached = first.HasTimestamp && (!j.HasNextKeyframe || int32(first.RTPTimestamp-j.NextKeyframe) < 0)
	j.FromOpen = first.Presentation.Sub(w.opened)
	if w.offer > 0 {
		offer := wall(w.offer, w.offset())
		j.FromOffer = first.Presentation.Sub(offer)
		j.OfferAt = offer.Sub(w.opened)
		j.AnswerAt = wall(w.answer, w.offset()).Sub(w.opened)
	}
	for e, d := range map[string]*time.Duration{"loadedmetadata": &j.Metadata, "loadeddata": &j.Loaded, "playing": &j.Playing} {
		if at, ok := w.events[e]; ok {
			*d = at.Sub(w.opened)
		}
	}

	// Catch-up: the first frame presented about as soon after its
	// sending as frames are in the measurement.
	catchUp := -1
	if steady.Frames > 0 {
		limit := steady.P50 + s.interval
		for i, f := range w.frames {
			if r, ok := s.lookup(f); ok && f.Presentation.Sub(r.Sent) <= limit {
				catchUp = i
				break
			}
		}
	}
	if catchUp >= 0 {
		c := w.frames[catchUp]
		j.CaughtUp, j.CatchUpFrame, j.CatchUp = true, c.RTPTimestamp, c.Presentation.Sub(first.Presentation)
		j.BurstDropped = c.Dropped
		if r0, ok := s.lookup(first); ok && catchUp > 0 && !first.Received.IsZero() && !c.Received.IsZero() {
			j.BurstFrames = s.index[c.RTPTimestamp] - s.index[r0.Timestamp]
			j.BurstReceived = c.Received.Sub(first.Received)
		}
		checked := w.frames[catchUp:]
		after := s.continuity(checked)
		// The compositor counts a drop when a frame replaces one it has
		// not drawn, so a drop between the catch-up frame's callback and
		// the next source frame's is the catch-up frame's own.
		if len(checked) > 1 && len(after.hitches) > 0 && after.hitches[0].Callback == 1 && after.hitches[0].Frames == 0 {
			d := after.hitches[0].Dropped
			j.BurstDropped += d
			after.dropped -= d
			after.hitches = after.hitches[1:]
		}
		j.Callbacks, j.Presented = len(w.frames)-catchUp, after.presented
		j.Jumps, j.Hitches, j.Skipped, j.Dropped = after.jumps, after.hitches, after.skipped, after.dropped
		j.Unknown, j.Backwards = after.unknown, after.backwards
	}

	if n := len(w.decoding); n > 0 {
		j.DecodeSamples = n
		for i := 1; i < n; i++ {
			if w.decoding[i].FramesDecoded <= w.decoding[i-1].FramesDecoded {
				j.DecodeStalls++
			}
		}
		j.FramesDecoded = w.decoding[n-1].FramesDecoded - w.decoding[0].FramesDecoded
		j.FreezesAfterFirst = w.decoding[n-1].FreezeCount - w.decoding[0].FreezeCount
	}
	return j
}

// lookup returns the record of a presented frame.
func (s *source) lookup(f presented) (record, bool) {
	if !f.HasTimestamp {
		return record{}, false
	}
	i, ok := s.index[f.RTPTimestamp]
	if !ok {
		return record{}, false
	}
	return s.frames[i], true
}

// continuityOf is what continuity found.
type continuityOf struct {
	presented          int     // frames handed to the renderer from the first callback to the last
	jumps              int     // callbacks whose frame is not the one after the previous
	skipped            int     // source frames never presented
	dropped            int     // presented frames the compositor did not draw
	hitches            []Hitch // where
	unknown, backwards int
}

// continuity checks that consecutive callbacks show consecutive source
// frames. Between two callbacks the source advances by as many frames as
// the page handed to its renderer (metadata.presentedFrames) when none
// was lost on the way; the renderer then shows them all unless it dropped
// some (droppedVideoFrames).
func (s *source) continuity(frames []presented) continuityOf {
	var c continuityOf
	if len(frames) == 0 {
		return c
	}
	last := frames[len(frames)-1]
	c.presented = last.PresentedFrames - frames[0].PresentedFrames + 1
	c.dropped = last.Dropped - frames[0].Dropped
	prev := -1 // index in frames of the last callback with a known frame
	for i, f := range frames {
		if _, ok := s.lookup(f); !ok {
			c.unknown++
			continue
		}
		if prev >= 0 {
			p := frames[prev]
			advanced := s.index[f.RTPTimestamp] - s.index[p.RTPTimestamp]
			shown := f.PresentedFrames - p.PresentedFrames
			h := Hitch{Callback: i, After: p.RTPTimestamp, Frames: advanced - 1, Dropped: f.Dropped - p.Dropped, At: f.Presentation}
			if advanced <= 0 {
				c.backwards++
				continue
			}
			if advanced > 1 || prev != i-1 {
				c.jumps++
			}
			if advanced > shown {
				h.Skipped = advanced - shown
				c.skipped += h.Skipped
			}
			if h.Frames > 0 || h.Dropped > 0 {
				c.hitches = append(c.hitches, h)
			}
		}
		prev = i
	}
	return c
}

// writeJoins writes two tables of the viewers' joins: how each started
// (times from opening the page), and how it played from then on.
func (r *Result) writeJoins(w io.Writer) {
	fmt.Fprintf(w, "late join %s after a keyframe: start, from opening the page\n", r.Options.JoinAt)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "viewer\tkeyframe sent\tnext keyframe\toffer\tanswer\tloadedmetadata\tplaying\tfirst frame\toffer→first frame\tfirst frame is\tcached start\t")
	for _, v := range r.Viewers {
		j := v.Join
		if j == nil {
			continue
		}
		next := "none"
		if j.HasNextKeyframe {
			next = "+" + ms(j.NextKeyframeAfter)
		}
		fmt.Fprintf(tw, "%s\t-%s\t%s\t+%s\t+%s\t+%s\t+%s\t+%s\t%s\t#%d (presented %d)\t%v\t\n",
			v.Name, ms(j.AfterKeyframe), next, ms(j.OfferAt), ms(j.AnswerAt), ms(j.Metadata), ms(j.Playing),
			ms(j.FromOpen), ms(j.FromOffer), j.FirstFrameIndex, j.FirstPresentedFrames, j.Cached)
	}
	tw.Flush()
	fmt.Fprintln(w, "late join: playback")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "viewer\tcatch-up\tburst frames/received in\tdropped by catch-up\tthen presented\tjumps\tnever presented\trenderer dropped\tdecode stalls\tfreezes\tfreeze time\tframes dropped\tlost\tPLI\tNACK\tkeyframes decoded\t")
	for _, v := range r.Viewers {
		j := v.Join
		if j == nil {
			continue
		}
		catchUp := "never"
		if j.CaughtUp {
			catchUp = "+" + ms(j.CatchUp)
		}
		in := v.Inbound
		burst := "-"
		if j.BurstFrames > 0 {
			burst = fmt.Sprintf("%d/%s", j.BurstFrames, ms(j.BurstReceived))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d/%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t\n",
			v.Name, catchUp, burst, j.BurstDropped, j.Presented, j.Jumps, j.Skipped, j.Dropped, j.DecodeStalls, j.DecodeSamples,
			in.Freezes, ms(in.FreezesDuration), in.FramesDropped, in.PacketsLost, in.PLIs, in.NACKs, in.KeyFramesDecoded)
	}
	tw.Flush()
	if fs := r.Function; fs != nil {
		rl, f := fs.Relay, fs.Fanout
		fmt.Fprintf(w, "relay: hub released %d packets; the function received %d (%d duplicates), found %d missing, recovered %d (%d late), dropped %d\n",
			fs.HubPackets, rl.Received, rl.Duplicates, rl.Lost, rl.Recovered, rl.Late, rl.Overflows)
		fmt.Fprintf(w, "function: %d packets in, %d sent, %d NACKed by viewers, %d retransmitted, %d cache misses, %d queue drops, %d send errors, %d PLI\n",
			f.PacketsIn, f.PacketsSent, f.NACKed, f.Retransmits, f.CacheMisses, f.QueueDrops, f.SendErrors, f.PLIs)
	}
	fmt.Fprintf(w, "UDP: browsers' namespace %d in, %d receive errors (%d socket buffer full); stack's namespace %d send buffer errors\n",
		r.BrowserUDP.InDatagrams, r.BrowserUDP.InErrors, r.BrowserUDP.RcvbufErrors, r.StackUDP.SndbufErrors)
}

// UDPStats are a namespace's UDP counters (/proc/net/snmp) that tell
// where datagrams were lost.
type UDPStats struct {
	InDatagrams, OutDatagrams int64
	InErrors, RcvbufErrors    int64 // datagrams dropped on receipt; of them, for a full socket buffer
	SndbufErrors, MemErrors   int64
	NoPorts, InCsumErrors     int64
}

// parseUDPStats reads the Udp lines of /proc/net/snmp.
func parseUDPStats(snmp string) (UDPStats, error) {
	var names, values []string
	for _, l := range strings.Split(snmp, "\n") {
		if rest, ok := strings.CutPrefix(l, "Udp: "); ok {
			if names == nil {
				names = strings.Fields(rest)
			} else {
				values = strings.Fields(rest)
			}
		}
	}
	if names == nil || len(values) != len(names) {
		return UDPStats{}, fmt.Errorf("glass: no Udp statistics in /proc/net/snmp")
	}
	var u UDPStats
	fields := map[string]*int64{
		"InDatagrams": &u.InDatagrams, "OutDatagrams": &u.OutDatagrams, "InErrors": &u.InErrors,
		"RcvbufErrors": &u.RcvbufErrors, "SndbufErrors": &u.SndbufErrors, "MemErrors": &u.MemErrors,
		"NoPorts": &u.NoPorts, "InCsumErrors": &u.InCsumErrors,
	}
	for i, n := range names {
		if p, ok := fields[n]; ok {
			v, err := strconv.ParseInt(values[i], 10, 64)
			if err != nil {
				return UDPStats{}, fmt.Errorf("glass: /proc/net/snmp: Udp %s: %w", n, err)
			}
			*p = v
		}
	}
	return u, nil
}

// readFunction reads the function's statistics the stack last wrote to
// path; nil when it wrote none.
func readFunction(path string) (*FunctionStats, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	var st FunctionStats
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("glass: %s: %w", path, err)
	}
	return &st, nil
}
