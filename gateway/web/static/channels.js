// The channel list: polling GET /api/channels and drawing one card per
// channel.

import * as format from "./format.js";

/**
 * ChannelPoller fetches the channel list every intervalMs and hands it to
 * every listener: an array of channels, or null when the request failed.
 */
export class ChannelPoller {
  constructor(url = "/api/channels", intervalMs = 3000) {
    this.url = url;
    this.intervalMs = intervalMs;
    this.listeners = new Set();
    this.timer = 0;
    this.running = false;
  }

  /** subscribe adds a listener; the returned function removes it. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.poll();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
  }

  async poll() {
    clearTimeout(this.timer);
    let list = null;
    try {
      const res = await fetch(this.url, { cache: "no-store", headers: { Accept: "application/json" } });
      if (res.ok) {
        const body = await res.json();
        if (Array.isArray(body)) list = body.filter((c) => c && Number.isFinite(c.channel));
      }
    } catch {
      // Unreachable server: listeners get null and keep what they know.
    }
    if (!this.running) return;
    for (const fn of this.listeners) fn(list);
    this.timer = setTimeout(() => this.poll(), this.intervalMs);
  }
}

/** watchURL is the player page of a channel. */
export function watchURL(channel) {
  return `/watch/${encodeURIComponent(channel)}`;
}

/**
 * describe lists the facts worth showing about a channel, in order; the
 * viewer count unless viewers is false.
 */
export function describe(c, { viewers = true } = {}) {
  const v = c.video || {};
  return [
    c.live && viewers ? format.viewers(c.viewers) : "",
    format.resolution(v.width, v.height),
    c.live && v.bitrate_bps > 0 ? format.bitrate(v.bitrate_bps) : "",
    c.live && v.frame_rate > 0 ? `${Math.round(v.frame_rate)}\u00a0fps` : "",
    v.codec || "",
    c.live && c.uptime_seconds > 0 ? `up ${format.duration(c.uptime_seconds)}` : "",
  ].filter(Boolean);
}

/**
 * ChannelList keeps a <ul> in step with the channel list, updating cards
 * in place so that hover and focus survive a refresh.
 */
export class ChannelList {
  constructor(ul) {
    this.ul = ul;
    this.cards = new Map(); // channel → <li>
  }

  render(channels) {
    const keep = new Set();
    channels.forEach((c, i) => {
      keep.add(c.channel);
      let li = this.cards.get(c.channel);
      if (!li) {
        li = newCard(c.channel);
        this.cards.set(c.channel, li);
      }
      updateCard(li, c);
      if (this.ul.children[i] !== li) this.ul.insertBefore(li, this.ul.children[i] || null);
    });
    for (const [channel, li] of this.cards) {
      if (!keep.has(channel)) {
        li.remove();
        this.cards.delete(channel);
      }
    }
  }
}

function newCard(channel) {
  const li = document.createElement("li");
  const a = document.createElement("a");
  a.className = "card";
  a.href = watchURL(channel);
  const head = document.createElement("div");
  head.className = "card-head";
  const name = document.createElement("span");
  name.className = "card-name";
  name.textContent = `Channel ${channel}`;
  const state = document.createElement("span");
  state.className = "badge";
  head.append(name, state);
  const facts = document.createElement("p");
  facts.className = "card-facts";
  const software = document.createElement("p");
  software.className = "card-software";
  a.append(head, facts, software);
  li.append(a);
  li.parts = { state, facts, software };
  return li;
}

function updateCard(li, c) {
  const { state, facts, software } = li.parts;
  li.dataset.live = String(Boolean(c.live));
  state.textContent = c.live ? "Live" : "Offline";
  state.classList.toggle("badge-live", Boolean(c.live));
  state.classList.toggle("badge-offline", !c.live);
  const text = describe(c).join(" · ") || (c.live ? "Live now" : "Not streaming");
  if (facts.textContent !== text) facts.textContent = text;
  const sw = c.publisher?.software || "";
  if (software.textContent !== sw) software.textContent = sw;
}
