// Tests of the page's pure logic, run by web_test.go with `node --test`
// in a copy where ../static holds the page's scripts.
import test from "node:test";
import assert from "node:assert/strict";

import * as format from "../static/format.js";
import { summarize } from "../static/stats.js";
import { retryAfterMs } from "../static/whep.js";
import { Backoff } from "../static/player.js";
import { describe } from "../static/channels.js";

// Units are joined by a no-break space; the tests read better with a space.
const spaced = (s) => s.replaceAll("\u00a0", " ");

test("bitrate reads as kb/s below a megabit and Mb/s above", () => {
  assert.equal(spaced(format.bitrate(850_000)), "850 kb/s");
  assert.equal(spaced(format.bitrate(2_500_000)), "2.5 Mb/s");
  assert.equal(spaced(format.bitrate(6_000_000)), "6 Mb/s");
  assert.equal(spaced(format.bitrate(12_000_000)), "12 Mb/s");
  assert.equal(format.bitrate(undefined), "—");
});

test("duration reads as seconds, minutes or hours", () => {
  assert.equal(spaced(format.duration(12.5)), "12 s");
  assert.equal(format.duration(725), "12:05");
  assert.equal(format.duration(3 * 3600 + 2 * 60 + 41), "3:02:41");
  assert.equal(format.duration(NaN), "—");
});

test("viewers agrees in number and is empty when unknown", () => {
  assert.equal(format.viewers(1), "1 viewer");
  assert.equal(format.viewers(3), "3 viewers");
  assert.equal(format.viewers(undefined), "");
});

test("describe a live channel lists what the API gave, and survives missing fields", () => {
  const c = {
    channel: 77,
    live: true,
    viewers: 3,
    uptime_seconds: 12.5,
    video: { codec: "H264", width: 1280, height: 720, bitrate_bps: 2500000, frame_rate: 30 },
  };
  assert.deepEqual(describe(c).map(spaced), ["3 viewers", "1280×720", "2.5 Mb/s", "30 fps", "H264", "up 12 s"]);
  assert.deepEqual(describe(c, { viewers: false })[0], "1280×720");
  assert.deepEqual(describe({ channel: 5, live: false }), []);
});

test("retry-after reads seconds and dates, bounded to a minute", () => {
  assert.equal(retryAfterMs("5"), 5000);
  assert.equal(retryAfterMs(null), 2000);
  assert.equal(retryAfterMs("soon"), 2000);
  assert.equal(retryAfterMs("0"), 1000);
  assert.equal(retryAfterMs("3600"), 60000);
  const now = Date.parse("2024-01-01T00:00:00Z");
  assert.equal(retryAfterMs("Mon, 01 Jan 2024 00:00:07 GMT", 2000, now), 7000);
});

test("backoff doubles from 250 ms to 5 s and starts over after a reset", () => {
  const b = new Backoff();
  const got = Array.from({ length: 7 }, () => b.next());
  assert.deepEqual(got, [250, 500, 1000, 2000, 4000, 5000, 5000]);
  b.reset();
  assert.equal(b.next(), 250);
});

function chromiumReport({ bytes, decoded, jbDelay, jbCount, rtt }) {
  return new Map([
    ["IT01V", { id: "IT01V", type: "inbound-rtp", kind: "video", bytesReceived: bytes, framesDecoded: decoded, framesDropped: 2,
      frameWidth: 1280, frameHeight: 720, framesPerSecond: 30, packetsLost: 4, jitterBufferDelay: jbDelay,
      jitterBufferEmittedCount: jbCount, codecId: "CV" }],
    ["IT01A", { id: "IT01A", type: "inbound-rtp", kind: "audio", bytesReceived: 1000, packetsLost: 1, codecId: "CA" }],
    ["CV", { id: "CV", type: "codec", mimeType: "video/H264" }],
    ["CA", { id: "CA", type: "codec", mimeType: "audio/opus" }],
    ["T01", { id: "T01", type: "transport", selectedCandidatePairId: "CP1" }],
    ["CP1", { id: "CP1", type: "candidate-pair", state: "succeeded", nominated: true, currentRoundTripTime: rtt }],
    ["CP2", { id: "CP2", type: "candidate-pair", state: "failed", currentRoundTripTime: 9 }],
  ]);
}

test("stats add up both tracks and rate the last interval", () => {
  const first = summarize(chromiumReport({ bytes: 0, decoded: 0, jbDelay: 0, jbCount: 0, rtt: 0.04 }), 1000);
  assert.equal(first.bitrateBps, undefined);
  const second = summarize(chromiumReport({ bytes: 312_500, decoded: 30, jbDelay: 1.5, jbCount: 30, rtt: 0.04 }), 2000, first);
  assert.equal(second.bitrateBps, 2_500_000);
  assert.equal(second.framesDecoded, 30);
  assert.equal(second.packetsLost, 5);
  assert.equal(second.jitterBufferMs, 50);
  assert.equal(second.rttMs, 40);
  assert.equal(second.latencyMs, 70); // 50 ms buffered + 40/2 ms on the way
  assert.equal(second.videoCodec, "H264");
  assert.equal(second.audioCodec, "OPUS");
  assert.equal(second.width, 1280);
});

test("stats find Firefox's selected pair and tolerate missing numbers", () => {
  const report = new Map([
    ["v", { id: "v", type: "inbound-rtp", kind: "video", bytesReceived: 10, framesDecoded: 3 }],
    ["p0", { id: "p0", type: "candidate-pair", state: "succeeded", currentRoundTripTime: 0.5 }],
    ["p1", { id: "p1", type: "candidate-pair", state: "succeeded", selected: true, currentRoundTripTime: 0.02 }],
  ]);
  const s = summarize(report, 1000);
  assert.equal(s.rttMs, 20);
  assert.equal(s.jitterBufferMs, undefined);
  assert.equal(s.latencyMs, undefined);
  assert.equal(s.packetsLost, undefined);
});
