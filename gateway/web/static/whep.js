// WHEP client (draft-ietf-wish-whep): one POST of the offer, one DELETE of
// the session to leave, and, where the server offers the draft's layer
// extension, POSTs that choose the session's simulcast layer. The offer goes at once, without waiting for ICE
// gathering, and no candidate is trickled: with no STUN or TURN server the
// browser gathers only host candidates, which browsers hide behind mDNS
// names a server cannot resolve. The server learns the browser's address
// from the browser's connectivity checks (a peer-reflexive candidate).

/** OfflineError: the channel is unknown or not live (404). */
export class OfflineError extends Error {
  constructor(message) {
    super(message || "channel is offline");
    this.name = "OfflineError";
  }
}

/** BusyError: no server can take the viewer now (503); retry after retryAfterMs. */
export class BusyError extends Error {
  constructor(retryAfterMs) {
    super("all servers are busy");
    this.name = "BusyError";
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * AuthError: the channel is private and the server refused the viewer
 * (401: no viewer token, or one that does not hold, such as an expired
 * one; 403: a token of another channel). reason is the server's words.
 * Asking again with the same token gets the same answer.
 */
export class AuthError extends Error {
  constructor(status, reason) {
    super(reason || (status === 403 ? "the viewer token is not for this channel" : "a viewer token is needed"));
    this.name = "AuthError";
    this.status = status;
  }
}

/** HTTPError: any other unexpected reply. */
export class HTTPError extends Error {
  constructor(status, message) {
    super(`WHEP: HTTP ${status}${message ? ": " + message : ""}`);
    this.name = "HTTPError";
    this.status = status;
  }
}

/**
 * retryAfterMs reads a Retry-After header (seconds or an HTTP date) into
 * milliseconds, between 1 s and 60 s; fallbackMs when absent or unreadable.
 */
export function retryAfterMs(header, fallbackMs = 2000, now = Date.now()) {
  let ms = NaN;
  const value = (header || "").trim();
  if (/^\d+$/.test(value)) {
    ms = Number(value) * 1000;
  } else if (value !== "") {
    ms = Date.parse(value) - now;
  }
  if (!Number.isFinite(ms)) return fallbackMs;
  return Math.min(60000, Math.max(1000, ms));
}

/** waitForGathering resolves when ICE gathering completes or after timeoutMs. */
export function waitForGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onState);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const onState = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    // A null candidate also marks the end, for browsers that are late
    // to update iceGatheringState.
    const onCandidate = (e) => {
      if (!e.candidate) done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", onState);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

/** LAYER_REL is the link relation of the WHEP layer extension's URL. */
export const LAYER_REL = "urn:ietf:params:whep:ext:core:layer";

// The grammar of a Link header (RFC 8288), one piece at a time: a link's
// <target>, one of its parameters (name, and a quoted or bare value), the
// comma before the next link.
const LINK_TARGET = /\s*<([^>]*)>/y;
const LINK_PARAM = /\s*;\s*([^\s;,=]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;,]*)))?/y;
const LINK_NEXT = /\s*,/y;

/**
 * parseLinks reads a Link header (several headers arrive joined by ", ")
 * into [{ url, params }], url as written and params by lower-case name
 * (the first of a name counts). It stops at the first piece it cannot
 * read, keeping the links before it.
 */
export function parseLinks(header) {
  const s = header || "";
  const links = [];
  let i = 0;
  for (;;) {
    LINK_TARGET.lastIndex = i;
    const target = LINK_TARGET.exec(s);
    if (!target) break;
    const link = { url: target[1], params: {} };
    i = LINK_TARGET.lastIndex;
    for (;;) {
      LINK_PARAM.lastIndex = i;
      const p = LINK_PARAM.exec(s);
      if (!p) break;
      const name = p[1].toLowerCase();
      if (!(name in link.params)) link.params[name] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3] || "";
      i = LINK_PARAM.lastIndex;
    }
    links.push(link);
    LINK_NEXT.lastIndex = i;
    if (!LINK_NEXT.exec(s)) break;
    i = LINK_NEXT.lastIndex;
  }
  return links;
}

/**
 * layerURL returns the absolute URL of the layer extension a WHEP answer's
 * Link header names (relative to base, the URL the offer went to), or null
 * when it names none.
 */
export function layerURL(header, base) {
  for (const link of parseLinks(header)) {
    const rels = (link.params.rel || "").toLowerCase().split(/\s+/);
    if (!rels.includes(LAYER_REL)) continue;
    try {
      return new URL(link.url, base).href;
    } catch {
      return null;
    }
  }
  return null;
}

/**
 * connect makes the offer on pc, posts it to url and applies the answer.
 * It resolves to the absolute URL of the session (to DELETE when leaving),
 * or rejects with OfflineError, BusyError, AuthError, HTTPError or a
 * network error. token, if given, is the viewer token of a private
 * channel: it goes as "Authorization: Bearer <token>" and nowhere else.
 * gatherTimeoutMs > 0 waits up to that long for ICE gathering first, for a
 * page given STUN or TURN servers whose candidates the server can use.
 * onServedBy, if given, gets the region and id of the function that
 * serves the session (the Lightspeed-Served-By header). onLayerURL, if
 * given, gets the absolute URL of the session's layer extension (see
 * selectLayer), when the answer links one.
 */
export async function connect(pc, url, { gatherTimeoutMs = 0, onServedBy, onLayerURL, token = "" } = {}) {
  await pc.setLocalDescription(await pc.createOffer());
  if (gatherTimeoutMs > 0) await waitForGathering(pc, gatherTimeoutMs);

  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(url, {
    method: "POST",
    headers,
    body: pc.localDescription.sdp,
    cache: "no-store",
  });
  if (res.status === 404) {
    throw new OfflineError((await res.text()).trim());
  }
  if (res.status === 401 || res.status === 403) {
    throw new AuthError(res.status, (await res.text()).trim().slice(0, 300));
  }
  if (res.status === 503) {
    throw new BusyError(retryAfterMs(res.headers.get("Retry-After")));
  }
  if (res.status !== 201) {
    throw new HTTPError(res.status, (await res.text()).trim().slice(0, 200));
  }
  const servedBy = res.headers.get("Lightspeed-Served-By");
  if (servedBy && onServedBy) onServedBy(servedBy);
  const location = res.headers.get("Location");
  const session = location ? new URL(location, res.url || url).href : null;
  const layer = layerURL(res.headers.get("Link"), res.url || url);
  if (layer && onLayerURL) onLayerURL(layer);
  const answer = await res.text();
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  } catch (err) {
    remove(session);
    throw err;
  }
  return session;
}

/**
 * selectLayer asks the server, at the session's layer URL (see connect's
 * onLayerURL), for the simulcast layer of rid layer ("" for the highest):
 * the server switches the session's video at that layer's next keyframe,
 * in the same PeerConnection. It resolves once the server has taken the
 * choice, or rejects with HTTPError (404: the session has ended) or a
 * network error. Like remove, it carries no viewer token: the session's
 * URL names it.
 */
export async function selectLayer(url, layer) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ encodingId: layer }),
    cache: "no-store",
  });
  if (!res.ok) {
    throw new HTTPError(res.status, (await res.text()).trim().slice(0, 200));
  }
}

/**
 * remove ends a session. keepalive lets the request outlive the page, so
 * it also works from a pagehide handler. It carries no viewer token: the
 * server checks the token when the session starts, and the session's URL
 * is what names it afterwards.
 */
export function remove(session) {
  if (!session) return;
  fetch(session, { method: "DELETE", keepalive: true }).catch(() => {});
}
