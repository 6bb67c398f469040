package ftlclient

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// drain sends packets of n bytes through p from now on, sleeping as p
// says, until the clock reaches end; it returns the bytes sent.
func drain(p *pacer, now *time.Time, end time.Time, n int) (sent int) {
	for now.Before(end) {
		if d := p.wait(*now); d > 0 {
			*now = now.Add(d)
			continue
		}
		p.sent(n)
		sent += n
	}
	return sent
}

func TestPacerKeepsTheSDKsBudget(t *testing.T) {
	p := newPacer(8000) // 1000 bytes a millisecond
	if p.step != 2*time.Millisecond {
		t.Fatalf("sleep step %v, want the SDK's 1392/1000 + 1 = 2 ms", p.step)
	}
	now := time.Unix(1000, 0)

	// The first packets may use 5 ms of the rate: four 1392-byte packets
	// (the fourth takes the level below zero), then the pacer waits.
	burst := 0
	for p.wait(now) == 0 {
		p.sent(maxMTU)
		burst++
	}
	if burst != 4 {
		t.Errorf("%d packets at the start, want 4 (5000 bytes of level)", burst)
	}

	// Kept busy, it sends the rate: 1,000,000 bytes a second, give or take
	// a packet and a sleep.
	start := now
	got := drain(p, &now, start.Add(time.Second), maxMTU)
	if low, high := 1000000-2*maxMTU, 1000000+2*maxMTU; got < low || got > high {
		t.Errorf("sent %d bytes in a busy second, want %d to %d", got, low, high)
	}

	// Idle, the level fills to 100 ms of the rate and no more: after 10 s
	// with nothing to send, a burst is 100,000 bytes (72 packets: the
	// last takes the level below zero).
	now = now.Add(10 * time.Second)
	burst = 0
	for p.wait(now) == 0 {
		p.sent(maxMTU)
		burst++
	}
	if burst != 72 {
		t.Errorf("%d packets after an idle while, want 72 (100 ms of the rate)", burst)
	}
}

func TestPeakKbpsIsOBSsFor12TimesTheVideoBitrate(t *testing.T) {
	// 30 frames of 1250 bytes: 300 kbit/s at 30 fps.
	var nals [][]byte
	for range 30 {
		n := make([]byte, 1250)
		n[0], n[1] = 0x41, 0x9a // a slice with first_mb_in_slice 0
		nals = append(nals, n)
	}
	if got := PeakKbps(nals); got != 360 {
		t.Errorf("PeakKbps = %d, want 360 (1.2 × 300)", got)
	}
	if got := PeakKbps(nil); got != 0 {
		t.Errorf("PeakKbps(nil) = %d, want 0", got)
	}
}

func TestPacedStreamSendsTheSamePacketsNoFasterThanThePeak(t *testing.T) {
	nals, opus := syntheticMedia()
	var videoBytes int
	want := func() [][]byte { // the video packets as sent unpaced
		f := startIngest(t, ingestOptions{})
		c := dial(t, f, Config{})
		video, _ := split(t, streamAll(t, f, c, nals, opus, 2))
		var out [][]byte
		for _, p := range video {
			b, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
			videoBytes += len(b)
		}
		return out
	}()

	const kbps = 400 // 50 bytes a millisecond
	type call struct {
		ts   uint32
		sent time.Time
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{PeakKbps: kbps, OnFrame: func(ts uint32, sent time.Time) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call{ts, sent})
	}})
	start := time.Now()
	packets := streamAll(t, f, c, nals, opus, 2)
	done := time.Now()
	video, audio := split(t, packets)
	var got [][]byte
	for _, p := range video {
		b, _ := p.Marshal()
		got = append(got, b)
	}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("paced: %d video packets differ from the %d sent unpaced", len(got), len(want))
	}
	if len(audio) == 0 {
		t.Errorf("no audio")
	}
	// Every video byte but the start's 5 ms of level went out at 50 bytes
	// a millisecond at most: the last one cannot have arrived sooner.
	if min := time.Duration(videoBytes-250-maxMTU) * time.Millisecond / 50; done.Sub(start) < min {
		t.Errorf("%d video bytes arrived in %v, faster than %d kbit/s allows (%v)", videoBytes, done.Sub(start), kbps, min)
	}

	mu.Lock()
	defer mu.Unlock()
	var frames []uint32
	for i, p := range video {
		if i == 0 || p.Timestamp != video[i-1].Timestamp {
			frames = append(frames, p.Timestamp)
		}
	}
	if len(calls) != len(frames) {
		t.Fatalf("OnFrame called %d times, want once for each of %d frames", len(calls), len(frames))
	}
	for i, cl := range calls {
		if cl.ts != frames[i] {
			t.Errorf("OnFrame %d: timestamp %d, want %d", i, cl.ts, frames[i])
		}
		if cl.sent.Before(start) || cl.sent.After(done) || i > 0 && cl.sent.Before(calls[i-1].sent) {
			t.Errorf("OnFrame %d: sent at %v, out of order or outside the stream", i, cl.sent)
		}
	}
}

func TestStreamWaitingForAFullPacerQueueEndsWithItsContext(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{PeakKbps: 8}) // 1 byte a millisecond: the queue fills
	idr := make([]byte, (paceQueue+10)*fuaFragment)
	idr[0], idr[1] = 0x65, 0x88
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for len(c.videoQ) < cap(c.videoQ) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	err := c.Stream(ctx, [][]byte{sps, idr}, nil, 1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Stream = %v, want context.Canceled", err)
	}
}

func TestPacedStreamReturnsOnceItsVideoIsSentSoDisconnectLosesNone(t *testing.T) {
	nals, opus := syntheticMedia()
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{PeakKbps: 400}) // the media's ~6 KB of video take >100 ms; the loop's timing ~20 ms
	if err := c.Stream(context.Background(), nals, opus, 1); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	sent := c.Stats().VideoPackets
	if err := c.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	waitFor(t, "the video packets counted as sent", func() bool {
		video, _ := split(t, f.mediaPackets())
		return uint64(len(video)) >= sent
	})
	video, _ := split(t, f.mediaPackets())
	// 9 packets: SPS, PPS, a 3-packet IDR, a 500-byte slice, a 1380-byte
	// one and a 2-packet FU-A.
	if sent != 9 || len(video) != 9 {
		t.Errorf("%d video packets counted as sent and %d arrived, want all 9 of the media", sent, len(video))
	}
}
