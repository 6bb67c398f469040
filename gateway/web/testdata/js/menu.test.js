// Tests of the player's quality menu (player.js with quality.js) against a
// fake of the few DOM parts the player touches, run by web_test.go with
// `node --test` in a copy where ../static holds the page's scripts. The
// player is not started: no RTCPeerConnection is made (a playing session
// is set up by hand, see playing).
import test from "node:test";
import assert from "node:assert/strict";

import { Player } from "../static/player.js";

// FakeElement is an element of the player's template: a role, text,
// hidden, listeners, children; a <select>'s options and value.
class FakeElement {
  constructor(role = "", tag = "div") {
    this.tag = tag;
    this.dataset = role ? { role } : {};
    this.hidden = false;
    this.textContent = "";
    this.children = [];
    this.listeners = {};
    this.attributes = {};
    this.selected = "";
  }
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }
  removeEventListener() {}
  dispatch(type) {
    for (const fn of this.listeners[type] || []) fn({ type, target: this });
  }
  setAttribute(name, value) {
    this.attributes[name] = value;
  }
  replaceChildren(...nodes) {
    this.children = nodes;
  }
  remove() {}
  // <select>
  get options() {
    return this.children;
  }
  get value() {
    return this.selected;
  }
  set value(v) {
    this.selected = this.children.some((o) => o.value === v) ? v : "";
  }
}

// FakeOption is new Option(text, value).
class FakeOption {
  constructor(text, value) {
    this.text = text;
    this.value = value;
  }
}

const ROLES = ["badge", "viewers", "notice", "spinner", "notice-text", "notice-detail", "stats", "stats-list",
  "unmute", "stats-toggle", "fullscreen", "quality", "title", "details"];

// newPlayer makes a Player on a fake page; it returns the player, its
// quality menu, its video and its parts by role.
function newPlayer(t, options) {
  const parts = ROLES.map((r) => new FakeElement(r, r === "quality" ? "select" : "div"));
  const video = new FakeElement("", "video");
  video.muted = true;
  const screen = new FakeElement("", "div");
  const el = new FakeElement("", "article");
  el.querySelectorAll = () => parts;
  el.querySelector = (sel) => (sel === "video" ? video : screen);
  const template = { content: { firstElementChild: { cloneNode: () => el } } };
  const saved = { document: globalThis.document, Option: globalThis.Option };
  globalThis.document = {
    getElementById: () => template,
    addEventListener() {},
    removeEventListener() {},
  };
  globalThis.Option = FakeOption;
  t.after(() => Object.assign(globalThis, saved));
  const player = new Player({ replaceChildren() {} }, 77, options);
  t.after(() => player.endSwitch()); // no notice timer outlives the test
  const byRole = Object.fromEntries(parts.map((p) => [p.dataset.role, p]));
  byRole.stats.hidden = true; // as in the template
  return { player, menu: byRole.quality, video, parts: byRole };
}

const layers = [
  { rid: "2", width: 1280, height: 720, bitrate: 2500000 },
  { rid: "1", width: 640, height: 360, bitrate: 800000 },
  { rid: "0", width: 320, height: 180, bitrate: 250000 },
];

const labels = (menu) => menu.options.map((o) => o.text.replaceAll("\u00a0", " "));

test("the menu shows while the channel is live with more than one layer", (t) => {
  const { player, menu } = newPlayer(t);
  player.setInfo({ channel: 77, live: true, viewers: 1 });
  assert.equal(menu.hidden, true, "no layers");
  player.setInfo({ channel: 77, live: true, layers: [layers[0]] });
  assert.equal(menu.hidden, true, "one layer");
  player.setInfo({ channel: 77, live: true, layers });
  assert.equal(menu.hidden, false);
  assert.deepEqual(labels(menu), ["Auto (highest)", "720p · 2.5 Mb/s", "360p · 800 kb/s", "180p · 250 kb/s"]);
  assert.equal(menu.value, "");
  player.setInfo({ channel: 77, live: false, layers });
  assert.equal(menu.hidden, true, "offline");
  player.setInfo(null); // the list could not be fetched: as it was
  assert.equal(menu.hidden, true);
});

test("the entries are updated in place while the layers stay the same", (t) => {
  const { player, menu } = newPlayer(t);
  player.setInfo({ channel: 77, live: true, layers });
  const first = menu.options[1];
  player.setInfo({ channel: 77, live: true, layers: [{ ...layers[0], bitrate: 3000000 }, layers[1], layers[2]] });
  assert.equal(menu.options[1], first, "the option was replaced");
  assert.equal(labels(menu)[1], "720p · 3 Mb/s");
  player.setInfo({ channel: 77, live: true, layers: layers.slice(1) });
  assert.deepEqual(labels(menu), ["Auto (highest)", "360p · 800 kb/s", "180p · 250 kb/s"]);
});

test("a layer pinned at start is asked for and shown as chosen", (t) => {
  const { player, menu } = newPlayer(t, { layer: "1" });
  assert.equal(player.whepURL, "/api/whep/77?layer=1");
  player.setInfo({ channel: 77, live: true, layers });
  assert.equal(menu.value, "1");
  // A rid the channel does not have plays the highest: the menu says Auto.
  const other = newPlayer(t, { layer: "9" });
  other.player.setInfo({ channel: 77, live: true, layers });
  assert.equal(other.menu.value, "");
  assert.equal(other.player.whepURL, "/api/whep/77?layer=9");
});

test("a choice asks for that layer, tells the page, and starts a new session at once", (t) => {
  const chosen = [];
  const { player, menu } = newPlayer(t, { onLayerChange: (l) => chosen.push(l) });
  player.setInfo({ channel: 77, live: true, layers });
  const connects = [];
  player.running = true; // as start() leaves it, without a connection
  player.connect = (text) => connects.push([text, player.whepURL]);

  menu.value = "0";
  menu.dispatch("change");
  assert.equal(player.layer, "0");
  assert.deepEqual(chosen, ["0"]);
  assert.deepEqual(connects, [["Switching quality…", "/api/whep/77?layer=0"]]);
  assert.equal(menu.value, "0");

  menu.value = "";
  menu.dispatch("change");
  assert.deepEqual(chosen, ["0", ""]);
  assert.deepEqual(connects[1], ["Switching quality…", "/api/whep/77"]);

  // The same choice again changes nothing.
  menu.dispatch("change");
  assert.equal(connects.length, 2);
  assert.equal(chosen.length, 2);
});

test("a stopped or refused player takes the choice for later and connects to nothing", (t) => {
  const { player } = newPlayer(t);
  const connects = [];
  player.connect = () => connects.push(player.whepURL);
  player.setLayer("1");
  assert.equal(player.whepURL, "/api/whep/77?layer=1");
  player.running = true;
  player.state = "denied";
  player.setLayer("2");
  assert.deepEqual(connects, []);
});

const LAYER_URL = "http://gw.test/api/whep/77/s1/layer";

// playing makes the player's state that of a session playing at width ×
// height whose WHEP answer linked the layer extension (layerURL; null:
// none), without a PeerConnection: connect only records its calls, which
// it returns.
function playing(player, video, { layerURL = LAYER_URL, width = 1280, height = 720 } = {}) {
  player.setInfo({ channel: 77, live: true, layers });
  player.running = true;
  player.gen = 7;
  player.pc = { close() {} };
  player.session = "http://gw.test/api/whep/77/s1";
  player.layerURL = layerURL;
  video.videoWidth = width;
  video.videoHeight = height;
  player.setState("playing");
  const connects = [];
  player.connect = (text) => connects.push([text, player.whepURL]);
  return connects;
}

// fakeFetch records the requests of fetch and answers each with answer().
function fakeFetch(t, answer = () => new Response(null, { status: 204 })) {
  const sent = [];
  t.mock.method(globalThis, "fetch", async (url, init) => {
    sent.push({ url, method: init.method, type: init.headers["Content-Type"], body: JSON.parse(init.body) });
    return answer();
  });
  return sent;
}

// settle lets the player's requests and their answers run.
async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

test("with the layer link a choice switches the running session in place", async (t) => {
  const chosen = [];
  const { player, menu, video, parts } = newPlayer(t, { onLayerChange: (l) => chosen.push(l) });
  const connects = playing(player, video);
  const sent = fakeFetch(t);
  const pc = player.pc;

  menu.value = "0";
  menu.dispatch("change");
  await settle();
  assert.deepEqual(sent, [{ url: LAYER_URL, method: "POST", type: "application/json", body: { encodingId: "0" } }]);
  assert.deepEqual(connects, [], "a new session was started");
  assert.equal(player.pc, pc);
  assert.equal(player.session, "http://gw.test/api/whep/77/s1");
  assert.deepEqual(chosen, ["0"], "the address is not told");
  assert.equal(player.whepURL, "/api/whep/77?layer=0", "a later session starts on the choice");
  assert.equal(player.state, "playing");
  assert.equal(parts.notice.hidden, false);
  assert.equal(parts.notice.dataset.switching, "true", "the picture is not dimmed as for a state");
  assert.equal(player.message, "Switching quality…");

  // A frame of the old size changes nothing; the first of a new size ends it.
  video.dispatch("resize");
  assert.equal(parts.notice.hidden, false);
  video.videoWidth = 320;
  video.videoHeight = 180;
  video.dispatch("resize");
  assert.equal(parts.notice.hidden, true);
  assert.equal(parts.notice.dataset.switching, "false");
  assert.equal(player.switching, null);

  // Auto asks for the highest with "".
  menu.value = "";
  menu.dispatch("change");
  await settle();
  assert.deepEqual(sent[1].body, { encodingId: "" });
  assert.equal(player.whepURL, "/api/whep/77");
  assert.deepEqual(chosen, ["0", ""]);
  assert.deepEqual(connects, []);
});

test("without the layer link a choice starts a new session on the layer", async (t) => {
  const { player, menu, video } = newPlayer(t);
  const connects = playing(player, video, { layerURL: null });
  const sent = fakeFetch(t);
  menu.value = "1";
  menu.dispatch("change");
  await settle();
  assert.deepEqual(connects, [["Switching quality…", "/api/whep/77?layer=1"]]);
  assert.deepEqual(sent, []);
});

test("the notice goes after 3 s when no frame of a new size comes", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { player, menu, video, parts } = newPlayer(t);
  playing(player, video);
  fakeFetch(t);
  menu.value = "1";
  menu.dispatch("change");
  await settle();
  t.mock.timers.tick(2999);
  assert.equal(parts.notice.hidden, false);
  assert.equal(player.message, "Switching quality…");
  t.mock.timers.tick(1);
  assert.equal(parts.notice.hidden, true);
  assert.equal(player.state, "playing");
});

test("a state's notice takes the place of the switch's", async (t) => {
  const { player, menu, video, parts } = newPlayer(t);
  playing(player, video);
  fakeFetch(t);
  menu.value = "1";
  menu.dispatch("change");
  await settle();
  player.setState("offline");
  assert.equal(player.message, "Channel 77 is offline. Waiting for the stream…");
  assert.equal(parts.notice.hidden, false);
  assert.equal(parts.notice.dataset.switching, "false");
});

test("a layer listed at the size showing is asked for without a notice", async (t) => {
  const { player, menu, video, parts } = newPlayer(t);
  playing(player, video, { width: 640, height: 360 });
  const sent = fakeFetch(t);
  menu.value = "1"; // 640x360
  menu.dispatch("change");
  await settle();
  assert.equal(sent.length, 1);
  assert.equal(parts.notice.hidden, true);
});

test("choices made while a request is out go in one more, the latest", async (t) => {
  const { player, menu, video, parts } = newPlayer(t);
  const connects = playing(player, video, { width: 320, height: 180 });
  const answers = [];
  const sent = fakeFetch(t, () => new Promise((resolve) => answers.push(resolve)));
  for (const rid of ["1", "0", "2"]) {
    menu.value = rid;
    menu.dispatch("change");
  }
  await settle();
  assert.deepEqual(sent.map((r) => r.body.encodingId), ["1"]);
  answers[0](new Response(null, { status: 204 }));
  await settle();
  assert.deepEqual(sent.map((r) => r.body.encodingId), ["1", "2"]);
  answers[1](new Response(null, { status: 204 }));
  await settle();
  assert.equal(sent.length, 2);
  assert.deepEqual(connects, []);
  assert.equal(parts.notice.hidden, false, "the last choice's notice stays until its frame");
});

test("a refused switch starts a new session on the layer", async (t) => {
  t.mock.method(console, "info", () => {});
  const { player, menu, video } = newPlayer(t);
  const connects = playing(player, video);
  fakeFetch(t, () => new Response("the session has ended\n", { status: 404 }));
  menu.value = "1";
  menu.dispatch("change");
  await settle();
  assert.deepEqual(connects, [["Switching quality…", "/api/whep/77?layer=1"]]);
});

test("an answer for a session already gone starts nothing", async (t) => {
  t.mock.method(console, "info", () => {});
  const { player, menu, video } = newPlayer(t);
  const connects = playing(player, video);
  let answer;
  fakeFetch(t, () => new Promise((resolve) => (answer = resolve)));
  menu.value = "1";
  menu.dispatch("change");
  await settle();
  player.gen++; // the session was torn down meanwhile
  answer(new Response("no such session\n", { status: 404 }));
  await settle();
  assert.deepEqual(connects, []);
});
