// Package testmedia holds a few seconds of committed test media, the kind
// OBS sends over FTL, and helpers that split it into the units a publisher
// sends: H.264 NAL units and Opus packets.
//
// The media is made by scripts/gen-testmedia.sh: 4 s of H.264 constrained
// baseline, 1280x720 at 30 fps with a keyframe every second and SPS and PPS
// before every IDR, no SEI and no AUD, one slice per frame; the same
// picture at 640x360 and 320x180, as the lower layers of a simulcast
// publisher; and 4 s of 48 kHz stereo Opus in 20 ms packets, in Ogg.
package testmedia

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"

	"github.com/pion/webrtc/v3/pkg/media/h264reader"
	"github.com/pion/webrtc/v3/pkg/media/oggreader"
)

// Properties of the committed media, for tests that reason about it.
const (
	Width           = 1280
	Height          = 720
	FrameRate       = 30 // frames per second
	KeyframeEvery   = 30 // frames from one IDR to the next
	OpusSampleRate  = 48000
	OpusFrameLength = 20 // milliseconds per Opus packet
	Seconds         = 4  // length of the video
)

// LayerHeights are the heights of the simulcast layers Layers returns,
// highest first; each is 16:9.
var LayerHeights = [...]int{720, 360, 180}

//go:embed video.h264 video-360.h264 video-180.h264 audio.ogg
var files embed.FS

// H264 returns the H.264 Annex B stream. The slice is a fresh copy.
func H264() []byte { return mustRead("video.h264") }

// Opus returns the Ogg Opus file. The slice is a fresh copy.
func Opus() []byte { return mustRead("audio.ogg") }

func mustRead(name string) []byte {
	b, err := files.ReadFile(name)
	if err != nil {
		// The files are embedded at build time: a miss is a build defect.
		panic(fmt.Sprintf("testmedia: %s: %v", name, err))
	}
	return b
}

// NALUnits returns the NAL units of the H.264 stream in order, without
// start codes.
func NALUnits() ([][]byte, error) {
	return SplitH264(H264())
}

// Layers returns the NAL units of the three simulcast layers (as
// NALUnits does), highest first (LayerHeights). Their keyframes fall on the
// same frames.
func Layers() ([][][]byte, error) {
	var layers [][][]byte
	for _, name := range []string{"video.h264", "video-360.h264", "video-180.h264"} {
		nals, err := SplitH264(mustRead(name))
		if err != nil {
			return nil, fmt.Errorf("testmedia: %s: %w", name, err)
		}
		layers = append(layers, nals)
	}
	return layers, nil
}

// SplitH264 splits an H.264 Annex B stream into its NAL units, in order,
// without start codes. Like OBS, it drops SEI units.
func SplitH264(annexB []byte) ([][]byte, error) {
	r, err := h264reader.NewReader(bytes.NewReader(annexB))
	if err != nil {
		return nil, fmt.Errorf("testmedia: h264: %w", err)
	}
	var nals [][]byte
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("testmedia: h264: NAL %d: %w", len(nals), err)
		}
		nals = append(nals, nal.Data)
	}
	if len(nals) == 0 {
		return nil, errors.New("testmedia: h264: no NAL units")
	}
	return nals, nil
}

// OpusPackets returns the Opus packets of the Ogg file in order, without
// the OpusHead and OpusTags header packets, as many as last as long as the
// video: the encoder adds a packet for its pre-skip, and a publisher that
// loops both tracks would otherwise pause the video 20 ms every loop.
func OpusPackets() ([][]byte, error) {
	packets, err := SplitOgg(Opus())
	if err != nil {
		return nil, err
	}
	return packets[:min(len(packets), Seconds*1000/OpusFrameLength)], nil
}

// SplitOgg returns the Opus packets of an Ogg Opus file in order, without
// the OpusHead and OpusTags header packets. Pages carry segments; a packet
// ends at the first segment shorter than 255 bytes and may span pages.
func SplitOgg(ogg []byte) ([][]byte, error) {
	// oggreader checks every page (signature, checksum) and returns the
	// payloads, but not the lacing values that tell where packets end:
	// those are read here from each page's segment table, which sits
	// between the 27-byte page header and the payload.
	const pageHeaderLen = 27
	r, _, err := oggreader.NewWith(bytes.NewReader(ogg))
	if err != nil {
		return nil, fmt.Errorf("testmedia: ogg: %w", err)
	}
	// NewWith has consumed the first page, the one with OpusHead.
	offset, err := pageLen(ogg, 0)
	if err != nil {
		return nil, err
	}
	var (
		packets [][]byte
		partial []byte
	)
	for page := 1; ; page++ {
		payload, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("testmedia: ogg: page %d: %w", page, err)
		}
		n, err := pageLen(ogg, offset)
		if err != nil {
			return nil, err
		}
		lacing := ogg[offset+pageHeaderLen : offset+pageHeaderLen+int(ogg[offset+26])]
		offset += n
		pos := 0
		for _, l := range lacing {
			partial = append(partial, payload[pos:pos+int(l)]...)
			pos += int(l)
			if l < 255 {
				if !isOpusHeader(partial) {
					packets = append(packets, partial)
				}
				partial = nil
			}
		}
	}
	if len(partial) > 0 {
		return nil, errors.New("testmedia: ogg: last packet is cut short")
	}
	if len(packets) == 0 {
		return nil, errors.New("testmedia: ogg: no Opus packets")
	}
	return packets, nil
}

// pageLen returns the length of the Ogg page at offset: header, segment
// table and payload.
func pageLen(ogg []byte, offset int) (int, error) {
	const pageHeaderLen = 27
	if offset+pageHeaderLen > len(ogg) {
		return 0, fmt.Errorf("testmedia: ogg: page at %d: short header", offset)
	}
	segments := int(ogg[offset+26])
	end := offset + pageHeaderLen + segments
	if end > len(ogg) {
		return 0, fmt.Errorf("testmedia: ogg: page at %d: short segment table", offset)
	}
	n := pageHeaderLen + segments
	for _, l := range ogg[offset+pageHeaderLen : end] {
		n += int(l)
	}
	if offset+n > len(ogg) {
		return 0, fmt.Errorf("testmedia: ogg: page at %d: short payload", offset)
	}
	return n, nil
}

func isOpusHeader(p []byte) bool {
	return bytes.HasPrefix(p, []byte("OpusHead")) || bytes.HasPrefix(p, []byte("OpusTags"))
}
