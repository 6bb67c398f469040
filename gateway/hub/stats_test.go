package hub_test

import (
	"encoding/hex"
	"math"
	"testing"
	"time"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
)

// SPSs of 1920x1080 streams made by x264 (1088 coded lines, cropped to 1080).
var (
	spsHigh1080     = mustHex("67640028acd940780227e5c044000003000400000300f03c60c658")
	spsBaseline1080 = mustHex("6742c028d900780227e5c044000003000400000300f03c60c920")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestStatsDescribeTheStream(t *testing.T) {
	tests := []struct {
		name     string
		sps      []byte
		wantFmtp string
	}{
		{"high profile", spsHigh1080, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640028"},
		{"constrained baseline", spsBaseline1080, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42c028"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pub, clk := newLiveHub(t)
			if got := h.Tracks()[hub.Video].Fmtp; got != "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f" {
				t.Errorf("fmtp before any SPS %q", got)
			}

			// 3 s at 25 frames/s with a keyframe each second, audio every 20 ms.
			var video, audio publisher
			windowBits := 0 // input bits arriving in the last 2 s before the Stats call
			count := func(arrival time.Time, payload []byte) {
				if !arrival.Before(t0.Add(time.Second)) {
					windowBits += 8 * (12 + len(payload))
				}
			}
			in := 0
			for k := range 75 {
				arrival := t0.Add(time.Duration(k) * 40 * time.Millisecond)
				nals := [][]byte{nal(1, 1500+k, byte(k))}
				if k%25 == 0 {
					nals = [][]byte{tt.sps, nal(8, 4, 0), nal(5, 6000, byte(k))}
				}
				for _, p := range video.frame(uint32(k)*3600, nals...) {
					count(arrival, p.Payload)
					pub.WriteRTP(hub.Video, p, arrival)
					in++
				}
				for i := range 2 {
					p := audio.frame(uint32(2*k+i)*960, []byte{0xfc, byte(i), 0xff})[0]
					at := arrival.Add(time.Duration(i) * 20 * time.Millisecond)
					count(at, p.Payload)
					pub.WriteRTP(hub.Audio, p, at)
					in++
				}
			}
			clk.Set(t0.Add(3 * time.Second))

			st := h.Stats()
			if st.Width != 1920 || st.Height != 1080 {
				t.Errorf("resolution %dx%d, want 1920x1080", st.Width, st.Height)
			}
			if st.FrameRate != 25 {
				t.Errorf("FrameRate %v, want 25", st.FrameRate)
			}
			if st.KeyframeInterval != time.Second {
				t.Errorf("KeyframeInterval %v, want 1s", st.KeyframeInterval)
			}
			if want := float64(windowBits) / 2; math.Abs(st.Bitrate-want) > 1 {
				t.Errorf("Bitrate %v, want %v", st.Bitrate, want)
			}
			if st.PacketsIn != uint64(in) || st.Channel != 77 || !st.Live || st.Publishes != 1 ||
				st.Publisher.Software != "OBS Studio 29.1.3" || !st.Since.Equal(t0) {
				t.Errorf("stats %+v", st)
			}
			if got := h.Tracks()[hub.Video].Fmtp; got != tt.wantFmtp {
				t.Errorf("fmtp %q, want %q", got, tt.wantFmtp)
			}

			pub.AddNACKs(3)
			pub.AddRecovered(2)
			if st := h.Stats(); st.NACKsSent != 3 || st.Recovered != 2 {
				t.Errorf("NACKsSent %d Recovered %d, want 3 2", st.NACKsSent, st.Recovered)
			}
		})
	}
}

func TestTracksDescribeTheOutput(t *testing.T) {
	h, _, _ := newLiveHub(t)
	got := h.Tracks()
	want := []relaywire.TrackInfo{
		{Flow: relaywire.FlowOf(77, hub.Video), Track: "video", SSRC: got[0].SSRC, PayloadType: 96, Codec: "H264", ClockRate: 90000, Fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
		{Flow: relaywire.FlowOf(77, hub.Audio), Track: "audio", SSRC: got[1].SSRC, PayloadType: 97, Codec: "OPUS", ClockRate: 48000, Channels: 2, Fmtp: "minptime=10;useinbandfec=1"},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Tracks() = %+v, want %+v", got, want)
	}
	if hub.Video.String() != "video" || hub.Audio.String() != "audio" {
		t.Errorf("track names %q %q", hub.Video, hub.Audio)
	}
}
