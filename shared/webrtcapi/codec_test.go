package webrtcapi

import (
	"testing"

	"github.com/pion/webrtc/v3"
)

func TestPreferH264PutsTheStreamsProfileFirst(t *testing.T) {
	tests := []struct {
		fmtp string
		want string // profile-level-id of the first codec
	}{
		{"", "42e01f"},
		{"packetization-mode=1;profile-level-id=42e01f", "42e01f"},
		{"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640028", "64001f"},
		{"packetization-mode=1;profile-level-id=4d401f", "4d001f"},
		{"packetization-mode=1;profile-level-id=42001e", "42001f"},
		{"profile-level-id=zz", "42e01f"},
	}
	for _, tt := range tests {
		t.Run(tt.fmtp, func(t *testing.T) {
			got := PreferH264(tt.fmtp)
			if len(got) != len(h264Profiles) {
				t.Fatalf("%d codecs, want %d", len(got), len(h264Profiles))
			}
			if p := fmtpParam(got[0].SDPFmtpLine, "profile-level-id"); p != tt.want {
				t.Fatalf("first %s, want %s", p, tt.want)
			}
		})
	}
}

func TestChooseCodec(t *testing.T) {
	remote := func(pt webrtc.PayloadType, fmtp string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp},
			PayloadType:        pt,
		}
	}
	high := PreferH264("packetization-mode=1;profile-level-id=640028")
	tests := []struct {
		name       string
		negotiated []webrtc.RTPCodecParameters
		wantPT     webrtc.PayloadType
		wantOK     bool
	}{
		{
			name: "the preferred profile, with the remote's payload type",
			negotiated: []webrtc.RTPCodecParameters{
				remote(96, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
				remote(120, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"),
			},
			wantPT: 120, wantOK: true,
		},
		{
			name:       "another H.264 profile in packetization mode 1 when the preferred one is missing",
			negotiated: []webrtc.RTPCodecParameters{remote(97, "packetization-mode=0;profile-level-id=42e01f"), remote(98, "packetization-mode=1;profile-level-id=f4001f")},
			wantPT:     98, wantOK: true,
		},
		{
			name:       "nothing in packetization mode 1",
			negotiated: []webrtc.RTPCodecParameters{remote(97, "packetization-mode=0;profile-level-id=42e01f")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := ChooseCodec(high, tt.negotiated)
			if ok != tt.wantOK || (ok && c.PayloadType != tt.wantPT) {
				t.Fatalf("chose %d %v, want %d %v", c.PayloadType, ok, tt.wantPT, tt.wantOK)
			}
		})
	}
}
