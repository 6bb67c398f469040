// Tests of the WHEP client against a fake RTCPeerConnection and fetch, run
// by web_test.go with `node --test` in a copy where ../static holds the
// page's scripts.
import test from "node:test";
import assert from "node:assert/strict";

import {
  AuthError,
  connect,
  HTTPError,
  LAYER_REL,
  layerURL,
  OfflineError,
  parseLinks,
  remove,
  selectLayer,
} from "../static/whep.js";

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

const TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJjaCI6Nzd9.c2lnbmF0dXJl";

test("a viewer token goes as the offer's Bearer token only", { timeout: 5000 }, async (t) => {
  const posted = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    posted.push({ url, init });
    return new Response("v=0\r\nanswer\r\n", { status: 201, headers: { Location: "/api/whep/77/session-1" } });
  });
  const pc = fakePC();
  const session = await connect(pc, "http://gw.test/api/whep/77", { token: TOKEN });
  assert.equal(posted.length, 1);
  const { url, init } = posted[0];
  assert.equal(init.headers.Authorization, `Bearer ${TOKEN}`);
  assert.equal(init.headers["Content-Type"], "application/sdp");
  assert.ok(!String(url).includes(TOKEN) && !session.includes(TOKEN), "the token is in a URL");
  assert.ok(!init.body.includes(TOKEN), "the token is in the offer");
  assert.equal(init.credentials, undefined, "the offer asks for credentials besides the token");
});

test("without a token the offer has no Authorization header", { timeout: 5000 }, async (t) => {
  const posted = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    posted.push(init);
    return new Response("v=0\r\nanswer\r\n", { status: 201, headers: { Location: "/api/whep/77/s" } });
  });
  await connect(fakePC(), "http://gw.test/api/whep/77");
  await connect(fakePC(), "http://gw.test/api/whep/77", { token: "" });
  for (const init of posted) assert.equal(init.headers.Authorization, undefined);
});

test("a 401 or 403 is an AuthError with the status and the server's reason", { timeout: 5000 }, async (t) => {
  for (const [status, text] of [
    [401, "channel 77 is private: a viewer token is needed to watch it (send it as Authorization: Bearer <token>)\n"],
    [401, "channel 77 is private and the viewer token was refused: viewer token expired at 2026-01-01T00:00:00Z\n"],
    [403, "viewer token is for another channel (channel 78), not channel 77\n"],
  ]) {
    t.mock.method(globalThis, "fetch", async () => new Response(text, { status }));
    await assert.rejects(connect(fakePC(), "http://gw.test/api/whep/77", { token: TOKEN }), (err) => {
      assert.ok(err instanceof AuthError, `${status}: ${err}`);
      assert.equal(err.status, status);
      assert.equal(err.message, text.trim());
      return true;
    });
  }
});

test("leaving deletes the session without the token, outliving the page", { timeout: 5000 }, async (t) => {
  const sent = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    sent.push({ url, init });
    return new Response("", { status: 200 });
  });
  remove("http://gw.test/api/whep/77/session-1");
  remove(null);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].url, "http://gw.test/api/whep/77/session-1");
  assert.equal(sent[0].init.method, "DELETE");
  assert.equal(sent[0].init.keepalive, true);
  assert.equal(sent[0].init.headers?.Authorization, undefined);
});

test("Link headers are read link by link, parameters and all", () => {
  assert.deepEqual(
    parseLinks(
      '<stun:stun.example.net>; rel="ice-server", <turn:turn.example.net?transport=udp>; rel="ice-server"; ' +
        'username="u, ser"; credential="p\\"w"; credential-type="password",' +
        "</api/whep/77/s/layer>;REL=urn:ietf:params:whep:ext:core:layer",
    ),
    [
      { url: "stun:stun.example.net", params: { rel: "ice-server" } },
      {
        url: "turn:turn.example.net?transport=udp",
        params: { rel: "ice-server", username: "u, ser", credential: 'p"w', "credential-type": "password" },
      },
      { url: "/api/whep/77/s/layer", params: { rel: LAYER_REL } },
    ],
  );
  assert.deepEqual(parseLinks(null), []);
  assert.deepEqual(parseLinks("garbage"), []);
  assert.deepEqual(
    parseLinks('<a>; rel="x" junk, <b>; rel="y"'),
    [{ url: "a", params: { rel: "x" } }],
    "stops at what it cannot read",
  );
});

test("the layer extension's URL is found among the links and made absolute", () => {
  const base = "https://gw.test/api/whep/77?layer=1";
  assert.equal(layerURL(`</api/whep/77/s1/layer>; rel="${LAYER_REL}"`, base), "https://gw.test/api/whep/77/s1/layer");
  assert.equal(
    layerURL(`<stun:stun.example.net>; rel="ice-server", <77/s1/layer>; rel="other ${LAYER_REL.toUpperCase()}"`, base),
    "https://gw.test/api/whep/77/s1/layer",
    "relative to the offer's URL; rel a list, its types in any case",
  );
  assert.equal(layerURL(`<https://other.test/l>; rel=${LAYER_REL}`, base), "https://other.test/l");
  assert.equal(layerURL('<stun:stun.example.net>; rel="ice-server"', base), null);
  assert.equal(layerURL(`<${LAYER_REL}>; rel="urn:ietf:params:whep:ext:core:server-sent-events"`, base), null);
  assert.equal(layerURL(null, base), null);
});

test("connect reports the layer URL of the answer's Link, and nothing without one", { timeout: 5000 }, async (t) => {
  const links = [
    [
      `<stun:stun.example.net>; rel="ice-server", </api/whep/77/session-1/layer>; rel="${LAYER_REL}"`,
      "http://gw.test/api/whep/77/session-1/layer",
    ],
    ['<stun:stun.example.net>; rel="ice-server"', null],
    [null, null],
  ];
  for (const [link, want] of links) {
    t.mock.method(globalThis, "fetch", async () => {
      const headers = new Headers({ Location: "/api/whep/77/session-1" });
      if (link) headers.set("Link", link);
      return new Response("v=0\r\nanswer\r\n", { status: 201, headers });
    });
    let got = null;
    const session = await connect(fakePC(), "http://gw.test/api/whep/77", { onLayerURL: (u) => (got = u) });
    assert.equal(session, "http://gw.test/api/whep/77/session-1");
    assert.equal(got, want, String(link));
  }
});

test("a layer is chosen with a JSON POST to the layer URL, without the token", { timeout: 5000 }, async (t) => {
  const sent = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    sent.push({ url, init });
    return new Response(null, { status: sent.length === 1 ? 204 : 200 });
  });
  await selectLayer("http://gw.test/api/whep/77/s/layer", "1");
  await selectLayer("http://gw.test/api/whep/77/s/layer", "");
  assert.equal(sent.length, 2);
  assert.equal(sent[0].url, "http://gw.test/api/whep/77/s/layer");
  assert.equal(sent[0].init.method, "POST");
  assert.deepEqual(sent[0].init.headers, { "Content-Type": "application/json" });
  assert.equal(sent[0].init.body, '{"encodingId":"1"}');
  assert.equal(sent[1].init.body, '{"encodingId":""}', "Auto: the highest");
});

test("a refused layer is an HTTPError with the status and the server's reason", { timeout: 5000 }, async (t) => {
  t.mock.method(globalThis, "fetch", async () => new Response("the session has ended\n", { status: 404 }));
  await assert.rejects(selectLayer("http://gw.test/l", "1"), (err) => {
    assert.ok(err instanceof HTTPError);
    assert.equal(err.status, 404);
    assert.match(err.message, /the session has ended/);
    return true;
  });
});
