// Tests of the WHIP client against a fake RTCPeerConnection and fetch, run
// by web_test.go with `node --test` in a copy where ../static holds the
// page's scripts.
import test from "node:test";
import assert from "node:assert/strict";

import { audioPreferences, channelOfKey, publish, PublishError, unpublish, videoPreferences } from "../static/whip.js";

const KEY = "77-s3cret";

// fakePC is a PeerConnection whose ICE gathering completes when the test
// says so (gathered()).
function fakePC() {
  const listeners = {};
  return {
    iceGatheringState: "gathering",
    localDescription: null,
    remote: null,
    async createOffer() {
      return { type: "offer", sdp: "v=0\r\noffer\r\n" };
    },
    async setLocalDescription(d) {
      this.localDescription = d;
    },
    async setRemoteDescription(d) {
      this.remote = d;
    },
    addEventListener(name, fn) {
      (listeners[name] ||= new Set()).add(fn);
    },
    removeEventListener(name, fn) {
      listeners[name]?.delete(fn);
    },
    gathered() {
      this.localDescription = { type: "offer", sdp: "v=0\r\noffer\r\na=candidate:1 1 udp 1 10.0.0.2 5000 typ host\r\n" };
      this.iceGatheringState = "complete";
      for (const fn of listeners.icegatheringstatechange || []) fn();
    },
  };
}

test("the complete offer is posted with the key as the Bearer token only", { timeout: 5000 }, async (t) => {
  const posted = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    posted.push({ url, init });
    return new Response("v=0\r\nanswer\r\n", { status: 201, headers: { Location: "/api/whip/session/abc" } });
  });
  const pc = fakePC();
  const done = publish(pc, "http://gw.test/api/whip", KEY);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(posted.length, 0, "posted before ICE gathering completed");
  pc.gathered();
  const session = await done;

  assert.equal(posted.length, 1);
  const { url, init } = posted[0];
  assert.equal(url, "http://gw.test/api/whip");
  assert.equal(init.method, "POST");
  assert.equal(init.headers["Content-Type"], "application/sdp");
  assert.equal(init.headers.Authorization, `Bearer ${KEY}`);
  assert.match(init.body, /a=candidate:/);
  assert.deepEqual(pc.remote, { type: "answer", sdp: "v=0\r\nanswer\r\n" });
  assert.equal(session, "http://gw.test/api/whip/session/abc");
  assert.ok(!String(url).includes("s3cret") && !session.includes("s3cret"), "the key is in a URL");
});

test("a refusal carries the status and the server's reason", { timeout: 5000 }, async (t) => {
  for (const [status, text] of [
    [401, "wrong stream key for channel 77\n"],
    [409, "channel 77 is already live\n"],
    [406, "the offer has no H.264 video (packetization-mode=1)\n"],
  ]) {
    t.mock.method(globalThis, "fetch", async () => new Response(text, { status }));
    const pc = fakePC();
    pc.iceGatheringState = "complete";
    await assert.rejects(publish(pc, "/api/whip", KEY), (err) => {
      assert.ok(err instanceof PublishError);
      assert.equal(err.status, status);
      assert.equal(err.message, text.trim());
      return true;
    });
  }
});

test("stopping deletes the session with the same Bearer token, outliving the page", { timeout: 5000 }, async (t) => {
  const sent = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    sent.push({ url, init });
    return new Response("", { status: 200 });
  });
  unpublish("http://gw.test/api/whip/session/abc", KEY);
  unpublish(null, KEY);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].url, "http://gw.test/api/whip/session/abc");
  assert.equal(sent[0].init.method, "DELETE");
  assert.equal(sent[0].init.headers.Authorization, `Bearer ${KEY}`);
  assert.equal(sent[0].init.keepalive, true);
});

test("the channel is the number before the separator of the key", () => {
  assert.equal(channelOfKey("77-secret"), 77);
  assert.equal(channelOfKey(" 77-secret\n"), 77);
  assert.equal(channelOfKey("12,secret"), 12);
  assert.equal(channelOfKey("4294967295-x"), 4294967295);
  for (const bad of ["", "77", "77-", "-secret", "0-secret", "4294967296-x", "abc-secret", "77-two words"]) {
    assert.equal(channelOfKey(bad), null, bad);
  }
});

const h264 = (mode, profile) => ({
  mimeType: "video/H264",
  clockRate: 90000,
  sdpFmtpLine: `level-asymmetry-allowed=1;packetization-mode=${mode};profile-level-id=${profile}`,
});

test("video preferences: H.264 in packetization mode 1, constrained baseline first, then rtx", () => {
  const vp8 = { mimeType: "video/VP8", clockRate: 90000 };
  const rtx = { mimeType: "video/rtx", clockRate: 90000 };
  const red = { mimeType: "video/red", clockRate: 90000 };
  const got = videoPreferences([vp8, rtx, h264(1, "42001f"), h264(0, "42e01f"), h264(1, "4d001f"), h264(1, "f4001f"), h264(1, "42e01f"), red]);
  assert.deepEqual(
    got.map((c) => c.sdpFmtpLine?.match(/profile-level-id=(\w+)/)?.[1] || c.mimeType),
    ["42e01f", "42001f", "4d001f", "f4001f", "video/rtx"],
  );
  assert.ok(got.slice(0, 4).every((c) => c.sdpFmtpLine.includes("packetization-mode=1")));
  assert.deepEqual(videoPreferences([vp8, rtx, h264(0, "42e01f")]), [], "no H.264 encoder in mode 1 must give nothing");
});

test("audio preferences: Opus only", () => {
  const opus = { mimeType: "audio/opus", clockRate: 48000, channels: 2 };
  assert.deepEqual(audioPreferences([{ mimeType: "audio/PCMU", clockRate: 8000 }, opus]), [opus]);
  assert.deepEqual(audioPreferences([{ mimeType: "audio/PCMU", clockRate: 8000 }]), []);
});
