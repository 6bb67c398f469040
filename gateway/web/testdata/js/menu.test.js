// Tests of the player's quality menu (player.js with quality.js) against a
// fake of the few DOM parts the player touches, run by web_test.go with
// `node --test` in a copy where ../static holds the page's scripts. The
// player is not started: no RTCPeerConnection is made.
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

// newPlayer makes a Player on a fake page; it returns the player and its
// quality menu.
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
  return { player, menu: parts.find((p) => p.dataset.role === "quality") };
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
