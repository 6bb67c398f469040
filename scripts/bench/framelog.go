//go:build linux

package main

import (
	"sort"
	"sync"
	"time"

	"lightspeed/shared/h264"
)

// frameTimes is when the first and the last (marker) packet of one video
// frame passed a point of the path: the publisher's side of the gateway,
// the baseline's feed, or a viewer.
type frameTimes struct {
	TS    uint32        // RTP timestamp of the frame
	First time.Duration // since the bench's epoch
	Last  time.Duration // since the bench's epoch; 0 until the marker packet passed
	Key   bool          // the frame's first packet starts a keyframe (carries an SPS)
}

// frameLog records the video frames seen at one point, in the order they
// were seen. A frame begins at a packet with a timestamp newer than the
// last frame's; packets of older frames (retransmissions) are ignored.
// Its methods are safe for concurrent use.
type frameLog struct {
	mu     sync.Mutex
	frames []frameTimes
}

// newFrameLog returns a log with room for capacity frames before it
// grows.
func newFrameLog(capacity int) *frameLog {
	return &frameLog{frames: make([]frameTimes, 0, capacity)}
}

// note records a video packet with timestamp ts and marker bit marker,
// seen at now. payload is only inspected for a frame's first packet.
func (l *frameLog) note(ts uint32, marker bool, payload []byte, now time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.frames); n > 0 {
		f := &l.frames[n-1]
		switch d := int32(ts - f.TS); {
		case d == 0:
			if marker && f.Last == 0 {
				f.Last = now
			}
			return
		case d < 0:
			return // a frame already recorded, sent again
		}
	}
	info, err := h264.Inspect(payload)
	f := frameTimes{TS: ts, First: now, Key: err == nil && info.Start && info.HasSPS}
	if marker {
		f.Last = now
	}
	l.frames = append(l.frames, f)
}

// add appends a frame that is known ahead of time (a publisher's
// schedule).
func (l *frameLog) add(f frameTimes) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frames = append(l.frames, f)
}

// take returns the frames recorded since the last take and forgets them.
func (l *frameLog) take() []frameTimes {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.frames
	l.frames = make([]frameTimes, 0, max(64, cap(out)))
	return out
}

// snapshot returns a copy of the frames recorded so far.
func (l *frameLog) snapshot() []frameTimes {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]frameTimes(nil), l.frames...)
}

// sentFrames is a publisher-side frame log prepared for lookups: frames
// in sending order, their timestamps increasing (modulo 2^32) from the
// first one.
type sentFrames []frameTimes

// find returns the frame with timestamp ts.
func (s sentFrames) find(ts uint32) (frameTimes, bool) {
	if len(s) == 0 {
		return frameTimes{}, false
	}
	base := s[0].TS
	want := ts - base
	i := sort.Search(len(s), func(i int) bool { return s[i].TS-base >= want })
	if i < len(s) && s[i].TS == ts {
		return s[i], true
	}
	return frameTimes{}, false
}

// lastKeyBefore returns the last keyframe whose first packet was sent at
// or before at.
func (s sentFrames) lastKeyBefore(at time.Duration) (frameTimes, bool) {
	i := sort.Search(len(s), func(i int) bool { return s[i].First > at })
	for i--; i >= 0; i-- {
		if s[i].Key {
			return s[i], true
		}
	}
	return frameTimes{}, false
}

// learnOffset finds the constant difference between the timestamps a
// viewer sees and the ones the sender sent (the hub adds one per
// publisher session): for each keyframe the viewers received, the
// keyframe sent last before it arrived is its most likely origin; the
// most frequent difference wins. A late joiner's first keyframe comes
// from the cache and may match the wrong one; the live keyframes that
// follow outvote it.
func learnOffset(sent sentFrames, received [][]frameTimes) (offset uint32, votes int, ok bool) {
	count := map[uint32]int{}
	for _, frames := range received {
		for _, f := range frames {
			if !f.Key {
				continue
			}
			if s, found := sent.lastKeyBefore(f.First); found {
				count[f.TS-s.TS]++
			}
		}
	}
	for off, n := range count {
		if n > votes || (n == votes && off < offset) {
			offset, votes, ok = off, n, true
		}
	}
	return offset, votes, ok
}
