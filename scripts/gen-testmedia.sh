#!/bin/sh
# gen-testmedia.sh regenerates the committed test media in shared/testkit/testmedia:
#
#   video.h264  H.264 Annex B, constrained baseline, 1280x720, 30 fps, 4 s,
#               a keyframe every second, SPS and PPS before every IDR, no SEI,
#               no AUD, one slice per frame, ~2 Mbit/s (many NAL units are
#               larger than one FTL packet, so FU-A is exercised);
#   video-360.h264, video-180.h264
#               the same picture at 640x360 (~600 kbit/s) and 320x180
#               (~200 kbit/s), keyframes on the same frames: the lower layers
#               of a simulcast publisher;
#   audio.ogg   Opus, 48 kHz stereo, 20 ms packets, 4 s of a sine tone, Ogg.
#
# The picture is ffmpeg's testsrc2 (moving pattern, timecode and frame
# counter) with a little temporal noise so that every frame costs bits, as
# a camera picture would. The output is bit-exact: the same ffmpeg makes
# the same bytes. Run from anywhere: ./scripts/gen-testmedia.sh
set -eu

command -v ffmpeg >/dev/null || { echo "gen-testmedia.sh: ffmpeg is required" >&2; exit 1; }

out="$(cd "$(dirname "$0")/.." && pwd)/shared/testkit/testmedia"
seconds=4

# video SIZE BITRATE MAXRATE FILE
video() {
	ffmpeg -hide_banner -loglevel error -y \
		-f lavfi -i "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t,scale=$1" \
		-t "$seconds" -an \
		-c:v libx264 -profile:v baseline -pix_fmt yuv420p -preset veryfast \
		-b:v "$2" -maxrate "$3" -bufsize "$2" \
		-g 30 -keyint_min 30 -sc_threshold 0 -bf 0 -threads 1 \
		-x264-params "repeat-headers=1:slices=1:aud=0" \
		-bsf:v "filter_units=remove_types=6|9" \
		-fflags +bitexact -flags:v +bitexact \
		-f h264 "$out/$4"
}
video 1280x720 2M 2.5M video.h264
video 640x360 600k 750k video-360.h264
video 320x180 200k 250k video-180.h264

ffmpeg -hide_banner -loglevel error -y \
	-f lavfi -i "sine=frequency=440:sample_rate=48000" \
	-t "$seconds" -vn \
	-ac 2 -ar 48000 -c:a libopus -b:a 64k -frame_duration 20 -application audio \
	-fflags +bitexact -flags:a +bitexact \
	-f ogg "$out/audio.ogg"

ls -l "$out/video.h264" "$out/video-360.h264" "$out/video-180.h264" "$out/audio.ogg"
