package hub_test

import (
	"bytes"
	"slices"
	"testing"

	"lightspeed/gateway/hub"
)

// stream writes frames of video with one audio packet after each, as
// a publisher interleaves them.
type stream struct {
	pub          *hub.Publisher
	video, audio publisher
	frame        uint32
}

func (s *stream) write(nals ...[]byte) {
	write(s.pub, hub.Video, s.video.frame(s.frame*3000, nals...), t0)
	write(s.pub, hub.Audio, s.audio.frame(s.frame*960, []byte{0xfc, byte(s.frame), 0xff}), t0)
	s.frame++
}

func (s *stream) keyframe() { s.write(nal(7, 12, 1), nal(8, 4, 2), nal(5, 5000, byte(s.frame))) }
func (s *stream) delta()    { s.write(nal(1, 2000, byte(s.frame))) }

func TestFromKeyframeSubscriberStartsAtTheCachedKeyframe(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	all := subscribe(t, h, hub.SubscribeOptions{})
	s := stream{pub: pub}

	s.keyframe()
	s.delta()
	s.delta()
	s.keyframe()
	s.delta()
	late := subscribe(t, h, hub.SubscribeOptions{Capacity: 4, FromKeyframe: true}) // mid-GOP, smaller than the GOP
	s.delta()
	s.delta()

	want := drain(t, all)
	start := -1
	for i, p := range want {
		if p.Keyframe {
			start = i // the last keyframe
		}
	}
	want = want[start:]
	got := drain(t, late)
	if len(got) == 0 || !got[0].Keyframe || got[0].Track != hub.Video {
		t.Fatalf("the late subscriber's first packet is not the keyframe start")
	}
	if len(got) != len(want) {
		t.Fatalf("late subscriber got %d packets, want %d (everything since the keyframe)", len(got), len(want))
	}
	for i := range got {
		if got[i].Track != want[i].Track || got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Fatalf("packet %d: %v seq %d, want %v seq %d (same bytes)", i, got[i].Track, got[i].Seq, want[i].Track, want[i].Seq)
		}
	}
	if late.Dropped() != 0 {
		t.Errorf("late subscriber dropped %d packets", late.Dropped())
	}
	for _, tr := range []hub.Track{hub.Video, hub.Audio} {
		for _, p := range got {
			if p.Track == tr {
				if late.First(tr) != p.Seq {
					t.Errorf("%v: First says %d, the first packet is %d", tr, late.First(tr), p.Seq)
				}
				break
			}
		}
	}
}

func TestFromKeyframeWithoutCachedKeyframeStartsLive(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := stream{pub: pub}
	s.delta()
	before := subscribe(t, h, hub.SubscribeOptions{FromKeyframe: true})
	live := subscribe(t, h, hub.SubscribeOptions{})
	firstVideo, firstAudio := before.First(hub.Video), before.First(hub.Audio)
	s.delta()
	got, want := drain(t, before), drain(t, live)
	if len(got) != len(want) || got[0].Seq != want[0].Seq {
		t.Errorf("subscriber before any keyframe got %d packets, want the %d live ones", len(got), len(want))
	}
	audio := slices.IndexFunc(got, func(p out) bool { return p.Track == hub.Audio })
	if got[0].Track != hub.Video || got[0].Seq != firstVideo || audio < 0 || got[audio].Seq != firstAudio {
		t.Errorf("First said video %d, audio %d; the live packets began with %v %d", firstVideo, firstAudio, got[0].Track, got[0].Seq)
	}

	s.keyframe()
	pub.Release()
	after := subscribe(t, h, hub.SubscribeOptions{FromKeyframe: true})
	if got := drain(t, after); len(got) != 0 {
		t.Errorf("subscriber after Release got %d packets of the ended session", len(got))
	}
}

func TestSlowSubscriberDropsWhileOthersGetEverything(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	slow := subscribe(t, h, hub.SubscribeOptions{Capacity: 4})
	fast := subscribe(t, h, hub.SubscribeOptions{})

	var seqs []uint16
	for i := range 100 {
		seqs = append(seqs, uint16(i))
	}
	writeSeqs(pub, t0, seqs...) // returns although slow is never read

	if got := drain(t, fast); len(got) != 100 {
		t.Errorf("fast subscriber got %d packets, want 100", len(got))
	}
	if fast.Dropped() != 0 {
		t.Errorf("fast subscriber dropped %d", fast.Dropped())
	}
	if slow.Dropped() != 96 {
		t.Errorf("slow subscriber dropped %d, want 96", slow.Dropped())
	}
	if n := slow.Pending(); n != 4 {
		t.Errorf("slow subscriber has %d packets pending, want 4", n)
	}
	if n := fast.Pending(); n != 0 {
		t.Errorf("drained subscriber has %d packets pending, want 0", n)
	}
	if st := h.Stats(); st.Dropped != 96 || st.Subscribers != 2 {
		t.Errorf("Stats Dropped %d Subscribers %d, want 96 2", st.Dropped, st.Subscribers)
	}
	if got := payloadSeqs(drain(t, slow)); !equal(got, []uint16{0, 1, 2, 3}) {
		t.Errorf("slow subscriber kept publisher seqs %v, want the first 4", got)
	}
}
