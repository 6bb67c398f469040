// WHIP client (RFC 9725) for the publish page: one POST of a complete
// offer, one DELETE of the session to stop, both with the stream key as the
// Bearer token. The key goes in the Authorization header only: never in a
// URL, never in storage, never in a log.

import { waitForGathering } from "./whep.js";

/** PublishError: the gateway refused (its status and plain-text body). */
export class PublishError extends Error {
  constructor(status, body) {
    super(body || `HTTP ${status}`);
    this.name = "PublishError";
    this.status = status;
  }
}

/**
 * channelOfKey returns the channel of a stream key, "<channel>-<secret>"
 * (or "," as the separator, as OBS's FTL SDK allows), or null when the key
 * does not start with one: 1 to 4294967295.
 */
export function channelOfKey(key) {
  const m = /^(\d{1,10})[-,]\S+$/.exec(String(key).trim());
  if (!m) return null;
  const channel = Number(m[1]);
  return channel >= 1 && channel <= 0xffffffff ? channel : null;
}

// The H.264 profiles the gateway takes, in the order we offer them:
// constrained baseline (what browsers encode in hardware and OpenH264),
// baseline, main, high.
const PROFILES = ["42e0", "4200", "4d00", "6400"];

function fmtp(codec, name) {
  for (const part of (codec.sdpFmtpLine || "").split(";")) {
    const [k, v] = part.split("=");
    if (k.trim() === name) return (v || "").trim().toLowerCase();
  }
  return "";
}

function isH264Mode1(codec) {
  return codec.mimeType.toLowerCase() === "video/h264" && fmtp(codec, "packetization-mode") === "1";
}

/**
 * videoPreferences orders a list of video codec capabilities for
 * setCodecPreferences: H.264 in packetization mode 1 only, the profiles the
 * gateway takes first, then retransmission (rtx). It is empty when the list
 * has no H.264 in packetization mode 1.
 */
export function videoPreferences(codecs) {
  const rank = (c) => {
    const i = PROFILES.indexOf(fmtp(c, "profile-level-id").slice(0, 4));
    return i < 0 ? PROFILES.length : i;
  };
  const h264 = codecs.filter(isH264Mode1).sort((a, b) => rank(a) - rank(b));
  if (h264.length === 0) return [];
  return [...h264, ...codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx")];
}

/** audioPreferences keeps Opus only; empty when there is none. */
export function audioPreferences(codecs) {
  return codecs.filter((c) => c.mimeType.toLowerCase() === "audio/opus");
}

/**
 * publish makes the offer on pc (its transceivers already added), waits up
 * to gatherTimeoutMs for ICE gathering to complete, posts the offer to url
 * with key as the Bearer token and applies the answer. It resolves to the
 * absolute session URL (to DELETE when stopping), or rejects with a
 * PublishError carrying the gateway's reason, or a network error.
 */
export async function publish(pc, url, key, { gatherTimeoutMs = 5000 } = {}) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForGathering(pc, gatherTimeoutMs);

  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${key}` },
    body: pc.localDescription.sdp,
    cache: "no-store",
  });
  if (res.status !== 201) {
    throw new PublishError(res.status, (await res.text()).trim().slice(0, 300));
  }
  const location = res.headers.get("Location");
  const session = location ? new URL(location, res.url || url).href : null;
  const answer = await res.text();
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  } catch (err) {
    unpublish(session, key);
    throw err;
  }
  return session;
}

/**
 * unpublish ends a session. keepalive lets the request outlive the page,
 * so it also works from a pagehide handler.
 */
export function unpublish(session, key) {
  if (!session) return;
  fetch(session, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${key}` },
    keepalive: true,
    cache: "no-store",
  }).catch(() => {});
}
