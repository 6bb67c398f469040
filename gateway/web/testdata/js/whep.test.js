// Tests of the WHEP client against a fake RTCPeerConnection and fetch, run
// by web_test.go with `node --test` in a copy where ../static holds the
// page's scripts.
import test from "node:test";
import assert from "node:assert/strict";

import { connect, OfflineError } from "../static/whep.js";

// fakePC is a PeerConnection whose ICE gathering never completes.
function fakePC() {
  return {
    iceGatheringState: "gathering",
    localDescription: null,
    remote: null,
    async createOffer() {
      return { type: "offer", sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n" };
    },
    async setLocalDescription(d) {
      this.localDescription = d;
    },
    async setRemoteDescription(d) {
      this.remote = d;
    },
    addEventListener() {},
    removeEventListener() {},
  };
}

test("the offer is posted at once, without waiting for ICE gathering", { timeout: 5000 }, async (t) => {
  // Timers only run when ticked: a wait for gathering would never end.
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const posted = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    posted.push({ url, init });
    return new Response("v=0\r\nanswer\r\n", {
      status: 201,
      headers: { Location: "/api/whep/77/session-1" },
    });
  });
  const pc = fakePC();
  const session = await connect(pc, "http://gw.test/api/whep/77");
  assert.equal(posted.length, 1);
  assert.equal(posted[0].init.method, "POST");
  assert.equal(posted[0].init.headers["Content-Type"], "application/sdp");
  assert.equal(posted[0].init.body, pc.localDescription.sdp);
  assert.equal(pc.iceGatheringState, "gathering");
  assert.deepEqual(pc.remote, { type: "answer", sdp: "v=0\r\nanswer\r\n" });
  assert.equal(session, "http://gw.test/api/whep/77/session-1");
});

test("a 404 is the channel being offline", { timeout: 5000 }, async (t) => {
  t.mock.method(globalThis, "fetch", async () => new Response("channel 77 is offline\n", { status: 404 }));
  await assert.rejects(connect(fakePC(), "http://gw.test/api/whep/77"), OfflineError);
});

test("the function serving the session is reported from Lightspeed-Served-By", { timeout: 5000 }, async (t) => {
  t.mock.method(globalThis, "fetch", async () =>
    new Response("v=0\r\nanswer\r\n", {
      status: 201,
      headers: { Location: "/api/whep/77/s", "Lightspeed-Served-By": "sin (local-sin-1a2b3c4d)" },
    }),
  );
  let servedBy = "";
  await connect(fakePC(), "http://gw.test/api/whep/77", { onServedBy: (s) => (servedBy = s) });
  assert.equal(servedBy, "sin (local-sin-1a2b3c4d)");
});
