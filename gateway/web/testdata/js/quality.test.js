// Tests of the quality menu's logic (quality.js), run by web_test.go with
// `node --test` in a copy where ../static holds the page's scripts.
import test from "node:test";
import assert from "node:assert/strict";

import {
  AUTO,
  layerLabel,
  layerSize,
  qualityOptions,
  readLayer,
  selectedOption,
  validLayer,
  whepURL,
  withLayer,
} from "../static/quality.js";
import { connect } from "../static/whep.js";
import { takeToken } from "../static/token.js";

// Units are joined by a no-break space; the tests read better with a space.
const spaced = (s) => s.replaceAll("\u00a0", " ");

// layers is how /api/channels lists a three-layer publisher, highest first.
const layers = [
  { rid: "2", width: 1280, height: 720, bitrate: 2500000 },
  { rid: "1", width: 640, height: 360, bitrate: 800000 },
  { rid: "0", width: 320, height: 180, bitrate: 250000 },
];

test("a rid is 1 to 16 of A-Z, a-z, 0-9, - and _, as the server takes it", () => {
  for (const ok of ["0", "h", "hi-res", "low_1", "ABCdef-_0123456z"]) assert.ok(validLayer(ok), ok);
  for (const bad of ["", "a b", "1.0", "é", "<b>", "abcdefghijklmnopq", 1, null, undefined]) {
    assert.ok(!validLayer(bad), String(bad));
  }
});

test("the menu lists Auto then every layer by height and bitrate, in the server's order", () => {
  const options = qualityOptions(layers);
  assert.deepEqual(
    options.map((o) => [o.value, spaced(o.label)]),
    [
      ["", "Auto (highest)"],
      ["2", "720p · 2.5 Mb/s"],
      ["1", "360p · 800 kb/s"],
      ["0", "180p · 250 kb/s"],
    ],
  );
  assert.equal(options[0], AUTO);
});

test("there is no menu for one layer, none, or no list", () => {
  assert.deepEqual(qualityOptions([layers[0]]), []);
  assert.deepEqual(qualityOptions([]), []);
  assert.deepEqual(qualityOptions(undefined), []);
  assert.deepEqual(qualityOptions(null), []);
  assert.deepEqual(qualityOptions("2"), []);
});

test("layers the server would not take, and repeated ones, are left out", () => {
  const options = qualityOptions([
    layers[0],
    { rid: "a b", height: 480 },
    { rid: "", height: 480 },
    null,
    { ...layers[0], bitrate: 1 },
    layers[1],
  ]);
  assert.deepEqual(options.map((o) => o.value), ["", "2", "1"]);
  // Two layers, one of them unusable: no menu.
  assert.deepEqual(qualityOptions([layers[0], { rid: "x y", height: 360 }]), []);
});

test("a layer without a picture yet is named by its rid, without a bitrate by its height", () => {
  assert.equal(layerLabel({ rid: "h", width: 0, height: 0, bitrate: 0 }), "Layer h");
  assert.equal(spaced(layerLabel({ rid: "h", height: 0, bitrate: 1200000 })), "Layer h · 1.2 Mb/s");
  assert.equal(layerLabel({ rid: "h", width: 1920, height: 1080, bitrate: 0 }), "1080p");
  assert.equal(layerLabel({ rid: "h", width: 1920, height: 1080 }), "1080p");
});

test("the menu shows the pinned layer, or Auto when the channel does not have it", () => {
  const options = qualityOptions(layers);
  assert.equal(selectedOption(options, "1"), "1");
  assert.equal(selectedOption(options, ""), "");
  assert.equal(selectedOption(options, "9"), "");
  assert.equal(selectedOption([], "1"), "");
});

test("the layer is read from the address; one the server would refuse is none", () => {
  assert.equal(readLayer("?layer=1"), "1");
  assert.equal(readLayer("layer=hi_res"), "hi_res");
  assert.equal(readLayer("?a=1&layer=0&b=2"), "0");
  assert.equal(readLayer("?layer=0&layer=1"), "0");
  assert.equal(readLayer("?%6Cayer=2"), "2");
  assert.equal(readLayer(""), "");
  assert.equal(readLayer("?layers=1&xlayer=2"), "");
  assert.equal(readLayer("?layer="), "");
  assert.equal(readLayer("?layer=a%20b"), "");
  assert.equal(readLayer("?layer=" + "x".repeat(17)), "");
  assert.equal(readLayer("?layer=%ZZ"), "");
});

test("a choice is written to the address, the rest kept as it was", () => {
  assert.equal(withLayer("", "1"), "?layer=1");
  assert.equal(withLayer("?a=1", "1"), "?a=1&layer=1");
  assert.equal(withLayer("?layer=2&a=%20x+y", "1"), "?a=%20x+y&layer=1");
  assert.equal(withLayer("?layer=2&layer=3", "0"), "?layer=0");
  assert.equal(withLayer("?a=1&layer=2", ""), "?a=1");
  assert.equal(withLayer("?layer=2", ""), "");
  assert.equal(withLayer("", ""), "");
  for (const l of ["0", "hi-res", "low_1"]) assert.equal(readLayer(withLayer("?a=1", l)), l);
});

test("the layer goes on the WHEP URL, and only when there is one", () => {
  assert.equal(whepURL(77), "/api/whep/77");
  assert.equal(whepURL(77, ""), "/api/whep/77");
  assert.equal(whepURL(77, "1"), "/api/whep/77?layer=1");
  assert.equal(whepURL(77, "hi_res-2"), "/api/whep/77?layer=hi_res-2");
});

test("a WHEP session asked on a layer posts there and is left at its own URL", { timeout: 5000 }, async (t) => {
  const posted = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    posted.push({ url, init });
    const res = new Response("v=0\r\nanswer\r\n", { status: 201, headers: { Location: "/api/whep/77/session-1" } });
    Object.defineProperty(res, "url", { value: url });
    return res;
  });
  const pc = {
    localDescription: null,
    async createOffer() {
      return { type: "offer", sdp: "v=0\r\n" };
    },
    async setLocalDescription(d) {
      this.localDescription = d;
    },
    async setRemoteDescription() {},
  };
  const session = await connect(pc, "http://gw.test" + whepURL(77, "1"));
  assert.equal(posted[0].url, "http://gw.test/api/whep/77?layer=1");
  assert.equal(session, "http://gw.test/api/whep/77/session-1");
});

test("the layer stays in the address while the token is taken out of it", () => {
  const hist = {
    state: null,
    calls: [],
    replaceState(state, unused, url) {
      this.calls.push(url);
    },
  };
  const u = new URL("http://gw.test/watch/77?token=a.b.c&layer=1");
  assert.equal(takeToken({ pathname: u.pathname, search: u.search, hash: u.hash }, hist), "a.b.c");
  assert.deepEqual(hist.calls, ["/watch/77?layer=1"]);
  assert.equal(readLayer(hist.calls[0].slice(hist.calls[0].indexOf("?"))), "1");
});

test("the size of the layer the server sends for a choice", () => {
  assert.deepEqual(layerSize(layers, "1"), { width: 640, height: 360 });
  assert.deepEqual(layerSize(layers, ""), { width: 1280, height: 720 }, "Auto: the highest");
  assert.deepEqual(layerSize(layers, "9"), { width: 1280, height: 720 }, "a rid the channel lacks: the highest");
  assert.equal(layerSize([{ rid: "1", width: 0, height: 0 }, layers[2]], "1"), null, "not known yet");
  assert.deepEqual(layerSize([{ rid: "a b", width: 1, height: 1 }, layers[1]], ""), { width: 640, height: 360 });
  assert.equal(layerSize(undefined, ""), null);
  assert.equal(layerSize([], "1"), null);
});
