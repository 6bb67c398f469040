// The quality menu's logic: which video layer of a simulcast channel the
// player asks for. A publisher may send up to four layers, each named by
// its RTP stream id (rid); /api/channels lists a live channel's layers,
// highest first, and the player asks for one with "?layer=<rid>" on its
// WHEP URL, and, where the server offers the WHEP layer extension, with a
// POST to the session's layer URL while it plays. Without a choice ("")
// the server sends the highest.
//
// The choice is no secret: "?layer=<rid>" in the page's address pins it
// at start and stays there, and a choice made in the menu is written back
// to the address, so that a reload or a shared link keeps it.

import * as format from "./format.js";

const PARAM = "layer";

// A rid as the server takes it: 1 to 16 of A-Z, a-z, 0-9, "-" and "_".
const RID = /^[A-Za-z0-9_-]{1,16}$/;

/** validLayer reports whether s names a layer the server would take. */
export function validLayer(s) {
  return typeof s === "string" && RID.test(s);
}

/**
 * readLayer returns the layer of a query string ("?a=1&layer=0", with or
 * without the "?"): its first "layer" parameter, or "" when there is none
 * or it is not a rid (the server would refuse it; the highest plays).
 */
export function readLayer(query) {
  for (const part of query.replace(/^\?/, "").split("&")) {
    const eq = part.indexOf("=");
    if (decode(eq < 0 ? part : part.slice(0, eq)) !== PARAM) continue;
    const value = decode(eq < 0 ? "" : part.slice(eq + 1));
    return validLayer(value) ? value : "";
  }
  return "";
}

/**
 * withLayer returns the query string with layer as its only "layer"
 * parameter, at the end ("?a=1&layer=0"), or with none when layer is ""
 * ("?a=1", or "" when nothing is left); the other parameters stay byte for
 * byte.
 */
export function withLayer(query, layer) {
  const kept = query
    .replace(/^\?/, "")
    .split("&")
    .filter((part) => {
      if (part === "") return false;
      const eq = part.indexOf("=");
      return decode(eq < 0 ? part : part.slice(0, eq)) !== PARAM;
    });
  if (layer) kept.push(`${PARAM}=${encodeURIComponent(layer)}`);
  return kept.length > 0 ? "?" + kept.join("&") : "";
}

/** whepURL is the WHEP endpoint of channel, asking for layer ("" for the highest). */
export function whepURL(channel, layer = "") {
  const base = `/api/whep/${encodeURIComponent(channel)}`;
  return layer ? `${base}?${PARAM}=${encodeURIComponent(layer)}` : base;
}

/**
 * layerLabel names a layer for a person: its height ("720p") and bitrate
 * ("720p · 2.5 Mb/s"); "Layer <rid>" until its resolution is known.
 */
export function layerLabel(layer) {
  const name = layer.height > 0 ? `${layer.height}p` : `Layer ${layer.rid}`;
  return layer.bitrate > 0 ? `${name} · ${format.bitrate(layer.bitrate)}` : name;
}

/** AUTO is the menu's entry for no choice: the server's highest layer. */
export const AUTO = { value: "", label: "Auto (highest)" };

/**
 * qualityOptions returns the menu's entries for a channel's layers (the
 * "layers" of its /api/channels entry, highest first): AUTO, then one per
 * layer, in the server's order, as { value: rid, label }. A channel with
 * fewer than two layers has no menu: []. Entries whose rid the server
 * would not take, and repeated rids, are left out.
 */
export function qualityOptions(layers) {
  if (!Array.isArray(layers)) return [];
  const seen = new Set();
  const options = [];
  for (const l of layers) {
    if (!l || !validLayer(l.rid) || seen.has(l.rid)) continue;
    seen.add(l.rid);
    options.push({ value: l.rid, label: layerLabel(l) });
  }
  return options.length > 1 ? [AUTO, ...options] : [];
}

/**
 * selectedOption is the value the menu shows as chosen for layer: layer
 * itself when the menu has it, else AUTO's (a pinned rid the channel does
 * not have plays the highest layer).
 */
export function selectedOption(options, layer) {
  return options.some((o) => o.value === layer) ? layer : AUTO.value;
}

/**
 * layerSize is the picture size of the layer the server sends for layer
 * ("": the highest; a rid the channel does not have also gets the
 * highest), as the channel's layers list it: { width, height }, or null
 * when the list has no such size (no layers, or one whose resolution is
 * not known yet).
 */
export function layerSize(layers, layer) {
  if (!Array.isArray(layers)) return null;
  const listed = layers.filter((l) => l && validLayer(l.rid));
  const l = listed.find((x) => x.rid === layer) || listed[0];
  return l && l.width > 0 && l.height > 0 ? { width: l.width, height: l.height } : null;
}

// decode reads one form-encoded name or value; a malformed escape is
// taken as it is.
function decode(s) {
  const plain = s.replaceAll("+", " ");
  try {
    return decodeURIComponent(plain);
  } catch {
    return plain;
  }
}
