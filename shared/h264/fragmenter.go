package h264

import "encoding/binary"

// fuaHeaderSize is the size of the FU indicator and FU header that start
// every FU-A payload.
const fuaHeaderSize = 2

// Fragmenter cuts an RTP H.264 payload into payloads of at most max bytes,
// writing the pieces into the caller's buffer without allocating:
//
//   - a payload that fits comes out unchanged, as one piece;
//   - a single NAL unit larger than max is cut into FU-A fragments (FU
//     indicator = F and NRI of the NAL header | 28, FU header = S/E | type;
//     the NAL header byte itself is not repeated);
//   - an FU-A fragment larger than max is cut into smaller FU-A fragments,
//     the S bit only on the first piece if the input had it, the E bit only
//     on the last piece if the input had it;
//   - a STAP-A larger than max is split into its NAL units, each as a single
//     NAL unit or FU-A pieces.
//
// Depacketizing the pieces (for example with pion's codecs.H264Packet)
// yields exactly the same NAL units as the input. A payload larger than max
// that Inspect rejects yields no pieces: it cannot be cut without knowing
// its structure.
//
// The zero value yields no pieces until Reset.
type Fragmenter struct {
	max   int
	units []byte // STAP-A aggregation units not yet started
	whole []byte // the next piece, to be written unchanged, if hasWhole
	frag  []byte // FU-A data bytes not yet written
	ind   byte   // FU indicator of the pieces cut from frag
	typ   byte   // FU header of the pieces cut from frag, without S and E
	start bool   // the next piece cut from frag gets the S bit
	end   bool   // the last piece cut from frag gets the E bit

	hasWhole bool
}

// Reset starts cutting payload into pieces of at most max bytes (max >= 3;
// smaller is treated as 3). payload is retained until the last Next.
func (f *Fragmenter) Reset(payload []byte, max int) {
	*f = Fragmenter{max: max}
	if f.max < fuaHeaderSize+1 {
		f.max = fuaHeaderSize + 1
	}
	switch {
	case len(payload) == 0:
		return
	case len(payload) <= f.max:
		f.whole, f.hasWhole = payload, true
		return
	}
	if _, err := Inspect(payload); err != nil {
		return
	}
	switch payload[0] & typeMask {
	case NALSTAPA:
		f.units = payload[1:]
	case NALFUA:
		f.ind = payload[0]
		f.typ = payload[1] & typeMask
		f.start = payload[1]&fuStart != 0
		f.end = payload[1]&fuEnd != 0
		f.frag = payload[fuaHeaderSize:]
	default:
		f.setUnit(payload)
	}
}

// setUnit makes the complete NAL unit nal the next thing to write: as it is
// if it fits, else as FU-A pieces.
func (f *Fragmenter) setUnit(nal []byte) {
	if len(nal) <= f.max {
		f.whole, f.hasWhole = nal, true
		return
	}
	f.ind = nal[0]&^typeMask | NALFUA
	f.typ = nal[0] & typeMask
	f.start, f.end = true, true
	f.frag = nal[1:]
}

// Next writes the next piece into dst and returns its length and whether it
// is the last piece of the input payload; n == 0 means no more pieces.
// dst must hold max bytes (Next panics if a piece does not fit); a piece is
// valid until dst is overwritten.
func (f *Fragmenter) Next(dst []byte) (n int, last bool) {
	if !f.hasWhole && len(f.frag) == 0 && len(f.units) > 0 {
		// Reset has checked the STAP-A, so every length is in range.
		size := int(binary.BigEndian.Uint16(f.units))
		unit := f.units[2 : 2+size]
		f.units = f.units[2+size:]
		f.setUnit(unit)
	}
	if f.hasWhole {
		n = copy(dst[:len(f.whole)], f.whole)
		f.whole, f.hasWhole = nil, false
		return n, f.done()
	}
	if len(f.frag) == 0 {
		return 0, false
	}

	k := min(len(f.frag), f.max-fuaHeaderSize)
	hdr := f.typ
	if f.start {
		hdr |= fuStart
		f.start = false
	}
	if k == len(f.frag) && f.end {
		hdr |= fuEnd
	}
	piece := dst[:fuaHeaderSize+k]
	piece[0], piece[1] = f.ind, hdr
	copy(piece[fuaHeaderSize:], f.frag[:k])
	f.frag = f.frag[k:]
	return len(piece), f.done()
}

// done reports whether nothing is left to write.
func (f *Fragmenter) done() bool {
	return !f.hasWhole && len(f.frag) == 0 && len(f.units) == 0
}
