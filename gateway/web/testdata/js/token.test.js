// Tests of the viewer token's handling at load (token.js), run by
// web_test.go with `node --test` in a copy where ../static holds the
// page's scripts.
import test from "node:test";
import assert from "node:assert/strict";

import { splitToken, takeToken } from "../static/token.js";

const TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJjaCI6Nzd9.c2lnbmF0dXJl";

// fakeHistory records replaceState calls.
function fakeHistory() {
  return {
    state: { kept: true },
    calls: [],
    replaceState(state, unused, url) {
      this.calls.push({ state, unused, url });
    },
  };
}

// fakeLocation is the location of href.
function fakeLocation(href) {
  const u = new URL(href);
  return { href: u.href, pathname: u.pathname, search: u.search, hash: u.hash };
}

test("the token is read from the query and removed from the address, the rest kept", () => {
  for (const [href, want] of [
    [`http://gw.test/watch/77?token=${TOKEN}`, "/watch/77"],
    [`http://gw.test/watch/77?a=1&token=${TOKEN}&b=%20x+y`, "/watch/77?a=1&b=%20x+y"],
    [`http://gw.test/watch/77?token=${TOKEN}#stats`, "/watch/77#stats"],
    [`http://gw.test/watch/77?token=${TOKEN}&token=second`, "/watch/77"],
    [`http://gw.test/?token=${TOKEN}&x`, "/?x"],
  ]) {
    const hist = fakeHistory();
    assert.equal(takeToken(fakeLocation(href), hist), TOKEN, href);
    assert.equal(hist.calls.length, 1, href);
    assert.equal(hist.calls[0].url, want, href);
    assert.deepEqual(hist.calls[0].state, { kept: true }, "the history entry's state is lost");
    assert.ok(!hist.calls[0].url.includes(TOKEN));
  }
});

test("an address without a token is left alone", () => {
  for (const href of ["http://gw.test/watch/77", "http://gw.test/watch/77?a=1", "http://gw.test/watch/77?tokens=x&xtoken=y"]) {
    const hist = fakeHistory();
    assert.equal(takeToken(fakeLocation(href), hist), "", href);
    assert.equal(hist.calls.length, 0, href);
  }
});

test("an empty token is no token, and is removed all the same", () => {
  const hist = fakeHistory();
  assert.equal(takeToken(fakeLocation("http://gw.test/watch/77?token=&a=1"), hist), "");
  assert.equal(hist.calls[0].url, "/watch/77?a=1");
});

test("an escaped token parameter is found and decoded", () => {
  assert.deepEqual(splitToken("?%74oken=a%2Eb"), { token: "a.b", search: "" });
  assert.deepEqual(splitToken("token=x%ZZ&a=%ZZ"), { token: "x%ZZ", search: "?a=%ZZ" });
  assert.deepEqual(splitToken(""), { token: null, search: "" });
});

test("the token is kept nowhere: no storage, no cookie, no console", () => {
  const touched = [];
  const trap = (name) =>
    new Proxy({}, {
      get(_, prop) {
        touched.push(`${name}.${String(prop)}`);
        return () => {};
      },
    });
  const saved = {};
  for (const name of ["localStorage", "sessionStorage", "indexedDB", "console"]) {
    saved[name] = Object.getOwnPropertyDescriptor(globalThis, name);
    Object.defineProperty(globalThis, name, { value: trap(name), configurable: true, writable: true });
  }
  try {
    const hist = fakeHistory();
    assert.equal(takeToken(fakeLocation(`http://gw.test/watch/77?token=${TOKEN}`), hist), TOKEN);
  } finally {
    for (const [name, d] of Object.entries(saved)) {
      if (d) Object.defineProperty(globalThis, name, d);
      else delete globalThis[name];
    }
  }
  assert.deepEqual(touched, []);
});
