// The player: watches one channel over WHEP and keeps watching. It
// reconnects by itself when the connection fails or video stops, waits
// quietly while the channel is offline, and shows what it is doing. A
// private channel's viewer token goes with every offer; when the server
// refuses it the player says why and stops asking. A channel with several
// video layers (simulcast) gets a quality menu: where the WHEP answer links
// the layer extension, a choice switches the running session in place (the
// PeerConnection and the picture stay; the new layer shows from its next
// keyframe); elsewhere it starts a new session on that layer.

import * as whep from "./whep.js";
import * as format from "./format.js";
import { summarize } from "./stats.js";
import { describe, watchURL } from "./channels.js";
import { layerSize, qualityOptions, selectedOption, whepURL } from "./quality.js";

const OFFLINE_RETRY_MS = 2000; // between offers while the channel is offline
const DISCONNECTED_GRACE_MS = 3000; // "disconnected" may heal; "failed" does not
const STALL_MS = 5000; // no decoded frame this long on a live channel: start again
const OFFLINE_STALL_MS = 2000; // no frame this long on a channel the API says is offline
const TICK_MS = 1000;
const SWITCH_NOTICE_MS = 3000; // "Switching quality…" at most this long, if no frame of a new size shows first

/** Backoff is a delay that doubles on each use, from min to max. */
export class Backoff {
  constructor(minMs = 250, maxMs = 5000) {
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.delayMs = minMs;
  }

  /** next returns the delay to wait now and doubles the following one. */
  next() {
    const d = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.maxMs);
    return d;
  }

  reset() {
    this.delayMs = this.minMs;
  }
}

/**
 * Player shows one channel inside root. state is "connecting", "playing",
 * "offline", "error" or "denied" (the server refused the viewer token, or
 * its absence, of a private channel: the player has stopped);
 * onStateChange hears every change. token is the channel's viewer token,
 * "" for none. layer is the rid of the video layer to ask for, "" for the
 * highest; onLayerChange hears every choice made in the quality menu.
 */
export class Player {
  #token; // the viewer token: in memory only, sent as the offer's Bearer token

  constructor(root, channel, { onStateChange = () => {}, token = "", layer = "", onLayerChange = () => {} } = {}) {
    this.channel = channel;
    this.#token = token;
    this.layer = layer;
    this.onStateChange = onStateChange;
    this.onLayerChange = onLayerChange;

    this.el = document.getElementById("player-template").content.firstElementChild.cloneNode(true);
    this.parts = {};
    for (const node of this.el.querySelectorAll("[data-role]")) this.parts[node.dataset.role] = node;
    this.video = this.el.querySelector("video");
    this.screen = this.el.querySelector(".screen");
    root.replaceChildren(this.el);

    this.state = "";
    this.running = false;
    this.gen = 0; // bumped on every teardown: callbacks of older sessions see it and stop
    this.pc = null;
    this.session = null; // WHEP session URL
    this.layerURL = null; // the session's WHEP layer extension URL; null when the server offers none
    this.selecting = null; // the gen of the session whose layer request is out, if any
    this.switching = null; // while a layer switched in place is awaited: { width, height, timer }
    this.backoff = new Backoff();
    this.retryTimer = 0;
    this.tickTimer = 0;
    this.frameHandle = 0;
    this.reconnects = 0;
    this.live = null; // from /api/channels: true, false, or null when not known (or not listed)
    this.info = null;
    this.resetCounters();

    this.parts.title.textContent = `Channel ${channel}`;
    this.parts.title.href = watchURL(channel);
    this.setupControls();
    this.setState("connecting");
  }

  /** whepURL is where the player asks for a session: its channel, on its layer. */
  get whepURL() {
    return whepURL(this.channel, this.layer);
  }

  /**
   * setLayer asks for the video layer of rid layer ("" for the highest)
   * from now on. A running session switches to it in place when the server
   * linked the layer extension; otherwise (or when the switch is refused)
   * a new session starts on it at once, without waiting for the current
   * one to fail. Later sessions start on it either way.
   */
  setLayer(layer) {
    if (layer === this.layer) return;
    this.layer = layer;
    this.onLayerChange(layer);
    this.renderQuality();
    if (!this.running || this.state === "denied") return;
    if (this.pc && this.layerURL) {
      this.switchInPlace();
      return;
    }
    this.backoff.reset();
    this.connect("Switching quality…");
  }

  // switchInPlace asks the server for this.layer at the session's layer
  // URL and shows "Switching quality…" until it shows. One request is out
  // at a time: choices made meanwhile go in one more, the latest. A
  // refusal (the session has ended, say) or a network error starts a new
  // session on the layer.
  async switchInPlace() {
    this.beginSwitch();
    const gen = this.gen;
    if (this.selecting === gen) return; // the request out sends the latest choice when it is done
    this.selecting = gen;
    const url = this.layerURL;
    try {
      let sent;
      do {
        sent = this.layer;
        await whep.selectLayer(url, sent);
      } while (gen === this.gen && sent !== this.layer);
    } catch (err) {
      if (gen === this.gen && this.running) {
        const why = err.message || err;
        console.info(`lightspeed: channel ${this.channel}: layer not switched in place (${why}); starting a new session`);
        this.backoff.reset();
        this.connect("Switching quality…");
      }
    } finally {
      if (this.selecting === gen) this.selecting = null;
    }
  }

  // beginSwitch shows "Switching quality…" over the picture until a frame
  // of another size than the one showing now arrives (the video's resize
  // event) or SWITCH_NOTICE_MS pass. It shows nothing when the layer asked
  // for is listed with the size showing now: there is no change to see.
  beginSwitch() {
    this.endSwitch();
    const { videoWidth: width, videoHeight: height } = this.video;
    const target = layerSize(this.info?.layers, this.layer);
    if (target && width > 0 && target.width === width && target.height === height) return;
    this.switching = { width, height, timer: setTimeout(() => this.endSwitch(), SWITCH_NOTICE_MS) };
    this.renderSwitch();
  }

  // endSwitch hides "Switching quality…".
  endSwitch() {
    if (!this.switching) return;
    clearTimeout(this.switching.timer);
    this.switching = null;
    this.renderSwitch();
  }

  // onResize hears the video's size change: a frame of a new size ends a
  // switch.
  onResize() {
    const s = this.switching;
    if (s && (this.video.videoWidth !== s.width || this.video.videoHeight !== s.height)) this.endSwitch();
  }

  /** start connects and keeps the player connected until stop. */
  start() {
    if (this.running) return;
    this.running = true;
    this.tickTimer = setInterval(() => this.tick(), TICK_MS);
    this.watchFrames();
    this.connect();
  }

  /** stop ends the session (telling the server) and all retries. */
  stop() {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.tickTimer);
    if (this.frameHandle && this.video.cancelVideoFrameCallback) {
      this.video.cancelVideoFrameCallback(this.frameHandle);
    }
    this.frameHandle = 0;
    this.teardown();
    this.video.srcObject = null;
  }

  /** destroy stops the player and removes it from the page. */
  destroy() {
    this.stop();
    document.removeEventListener("keydown", this.onKey);
    this.el.remove();
  }

  /** message is what the player's notice says, detail included. */
  get message() {
    const detail = this.parts["notice-detail"].textContent;
    return this.parts["notice-text"].textContent + (detail ? "\n" + detail : "");
  }

  /** framesDecoded counts the video frames decoded in the current session. */
  framesDecoded() {
    return Math.max(this.statsFrames, this.presentedFrames);
  }

  /**
   * setInfo takes this channel's entry of /api/channels (undefined when
   * the channel is not listed, null when the list could not be fetched).
   * An unlisted channel may be private (the list leaves those out) or
   * unknown: the WHEP answer tells, so it leaves liveness unknown.
   */
  setInfo(info) {
    if (info === null) return;
    const wasLive = this.live;
    this.live = info ? Boolean(info.live) : null;
    this.info = info || null;
    if (this.live && wasLive === false) {
      // The stream is back: give it time to flow before calling it stalled,
      // and do not wait for the offline retry timer to ask again.
      this.lastProgressAt = performance.now();
      if (this.running && !this.pc) this.connect();
    }
    this.renderInfo();
  }

  // connect makes one attempt at a session; its failures schedule the
  // next. text, if given, is what the notice says meanwhile.
  async connect(text) {
    if (!this.running) return;
    this.teardown();
    const gen = ++this.gen;
    if (this.state !== "offline") {
      this.setState("connecting", text || (this.reconnects > 0 ? "Reconnecting…" : "Connecting…"));
    }

    let pc;
    try {
      pc = new RTCPeerConnection();
    } catch {
      this.setState("error", "This browser cannot play WebRTC streams.");
      return;
    }
    this.pc = pc;
    this.resetCounters();

    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    // The server may not name a stream for its tracks: gather them in ours.
    const stream = new MediaStream();
    pc.addEventListener("track", (e) => {
      if (gen !== this.gen) return;
      stream.addTrack(e.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
      this.play();
    });
    pc.addEventListener("connectionstatechange", () => {
      if (gen !== this.gen) return;
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.retry(`connection ${pc.connectionState}`);
      }
    });

    let session;
    let layerURL = null;
    try {
      session = await whep.connect(pc, this.whepURL, {
        onServedBy: (s) => (this.servedBy = s),
        onLayerURL: (u) => (layerURL = u),
        token: this.#token,
      });
    } catch (err) {
      if (gen !== this.gen) return;
      this.teardown();
      if (err instanceof whep.AuthError) {
        // The same token gets the same answer: stop until a new link is
        // opened (a reload of one with a fresh token plays).
        this.stop();
        this.setState("denied", this.deniedText(err), err.message);
      } else if (err instanceof whep.OfflineError) {
        this.video.srcObject = null;
        this.setState("offline");
        this.schedule(OFFLINE_RETRY_MS);
      } else if (err instanceof whep.BusyError) {
        this.setState("connecting", `All servers are busy. Retrying in ${Math.round(err.retryAfterMs / 1000)} s…`);
        this.schedule(err.retryAfterMs);
      } else {
        const delay = this.backoff.next();
        this.setState("error", `Cannot connect (${err.message || err}). Retrying…`);
        this.schedule(delay);
      }
      return;
    }
    if (gen !== this.gen) {
      whep.remove(session); // stopped while the offer was in flight
      return;
    }
    this.session = session;
    this.layerURL = layerURL;
    this.lastProgressAt = performance.now();
    if (this.state !== "connecting") this.setState("connecting");
  }

  // retry drops the session and connects again after the backoff delay.
  retry(reason) {
    if (!this.running) return;
    console.info(`lightspeed: channel ${this.channel}: ${reason}; reconnecting`);
    this.teardown();
    this.reconnects++;
    this.setState("connecting", "Reconnecting…");
    this.schedule(this.backoff.next());
  }

  // deniedText says, for a person, why the server refused err.
  deniedText(err) {
    if (err.status === 403) {
      return `The viewer token of this link is for another channel. Ask for a link to channel ${this.channel}.`;
    }
    if (!this.#token) {
      return `Channel ${this.channel} is private: it needs a viewer token. Open the watch link you were given, token included.`;
    }
    return `Channel ${this.channel} is private and the viewer token of this link was refused. Ask for a new link.`;
  }

  schedule(delayMs) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  // teardown closes the connection and ends the WHEP session, if any.
  teardown() {
    this.gen++;
    clearTimeout(this.retryTimer);
    this.endSwitch();
    this.layerURL = null;
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    whep.remove(this.session);
    this.session = null;
  }

  resetCounters() {
    this.statsFrames = 0;
    this.presentedFrames = 0;
    this.snap = undefined;
    this.disconnectedAt = 0;
    this.lastProgressAt = performance.now();
  }

  // tick reads the stats and checks the connection's health once a second.
  async tick() {
    const pc = this.pc;
    const gen = this.gen;
    if (!pc) return;
    let snap;
    try {
      snap = summarize(await pc.getStats(), performance.now(), this.snap);
    } catch {
      return;
    }
    if (gen !== this.gen) return;
    this.snap = snap;
    if (snap.framesDecoded > this.statsFrames) {
      this.statsFrames = snap.framesDecoded;
      this.progress();
    }
    this.renderStats();
    this.checkHealth(pc);
  }

  checkHealth(pc) {
    const now = performance.now();
    const cs = pc.connectionState || pc.iceConnectionState;
    if (cs === "failed" || cs === "closed") {
      this.retry(`connection ${cs}`);
      return;
    }
    if (cs === "disconnected") {
      this.disconnectedAt ||= now;
      if (now - this.disconnectedAt > DISCONNECTED_GRACE_MS) {
        this.retry("disconnected for 3 s");
        return;
      }
    } else {
      this.disconnectedAt = 0;
    }
    const stalled = now - this.lastProgressAt;
    if (this.live === false) {
      // The publisher left; the session stays up for when it returns.
      if (stalled > OFFLINE_STALL_MS && this.state !== "offline") this.setState("offline");
      return;
    }
    // A hidden tab may stop presenting frames: judge it when it is back.
    if (stalled > STALL_MS && !document.hidden) this.retry("no video frame for 5 s");
  }

  // progress records that a frame was decoded or presented.
  progress() {
    if (!this.pc) return;
    this.lastProgressAt = performance.now();
    if (this.state !== "playing") {
      this.backoff.reset();
      this.setState("playing");
    }
  }

  // watchFrames counts presented frames where the browser can tell us
  // (requestVideoFrameCallback); elsewhere the stats tick does the job.
  watchFrames() {
    if (!this.video.requestVideoFrameCallback) return;
    const onFrame = () => {
      if (!this.running) return;
      this.presentedFrames++;
      this.progress();
      this.frameHandle = this.video.requestVideoFrameCallback(onFrame);
    };
    this.frameHandle = this.video.requestVideoFrameCallback(onFrame);
  }

  play() {
    this.video.play().catch(() => {
      // Autoplay refused even muted: the unmute button also starts playback.
      this.parts.unmute.hidden = false;
    });
  }

  /**
   * setState shows state with text (the state's usual words when absent)
   * and detail, a second, quieter line (the server's words, say).
   */
  setState(state, text, detail = "") {
    const changed = state !== this.state;
    this.state = state;
    const { badge, notice, spinner } = this.parts;
    const labels = { connecting: "Connecting", playing: "Live", offline: "Offline", error: "Error", denied: "Private" };
    badge.textContent = labels[state];
    badge.className = `badge badge-${state === "playing" ? "live" : state}`;
    this.el.dataset.state = state;

    const messages = {
      connecting: "Connecting…",
      offline: `Channel ${this.channel} is offline. Waiting for the stream…`,
      error: "Something went wrong. Retrying…",
      denied: `Channel ${this.channel} cannot be watched without a valid viewer token.`,
    };
    notice.hidden = state === "playing";
    spinner.hidden = state !== "connecting";
    this.parts["notice-text"].textContent = text || messages[state] || "";
    this.parts["notice-detail"].textContent = detail;
    this.parts["notice-detail"].hidden = !detail;
    this.renderUnmute();
    this.renderSwitch();
    if (changed) this.onStateChange(state);
  }

  // renderSwitch shows over a playing picture, which stays in view, that a
  // layer switched in place is on its way; in the other states their own
  // notice shows.
  renderSwitch() {
    const on = Boolean(this.switching);
    this.parts.notice.dataset.switching = String(on && this.state === "playing");
    if (this.state !== "playing") return;
    this.parts.notice.hidden = !on;
    this.parts.spinner.hidden = !on;
    this.parts["notice-text"].textContent = on ? "Switching quality…" : "";
    this.parts["notice-detail"].textContent = "";
    this.parts["notice-detail"].hidden = true;
  }

  // renderUnmute offers sound while there is a picture to go with it.
  renderUnmute() {
    this.parts.unmute.hidden = !(this.video.muted && this.state === "playing");
  }

  renderInfo() {
    const { viewers, details } = this.parts;
    const info = this.info;
    const n = info?.viewers;
    viewers.hidden = !(this.live && Number.isFinite(n));
    if (!viewers.hidden) viewers.textContent = format.viewers(n);
    const facts = info ? describe(info, { viewers: false }) : [];
    if (info?.publisher?.software) facts.push(info.publisher.software);
    details.textContent = facts.join(" · ");
    this.renderQuality();
  }

  // renderQuality shows the quality menu while the channel is live with
  // more than one layer. The list comes again every few seconds with new
  // bitrates: the entries are relabelled in place, and rebuilt only when
  // the layers themselves change.
  renderQuality() {
    const menu = this.parts.quality;
    const options = this.live ? qualityOptions(this.info?.layers) : [];
    menu.hidden = options.length === 0;
    if (menu.hidden) return;
    const same =
      menu.options.length === options.length && options.every((o, i) => menu.options[i].value === o.value);
    if (!same) {
      menu.replaceChildren(...options.map((o) => new Option(o.label, o.value)));
    } else {
      options.forEach((o, i) => {
        if (menu.options[i].text !== o.label) menu.options[i].text = o.label;
      });
    }
    menu.value = selectedOption(options, this.layer);
  }

  renderStats() {
    const box = this.parts.stats;
    if (box.hidden) return;
    const s = this.snap || {};
    const v = this.video;
    const res = format.resolution(s.width || v.videoWidth, s.height || v.videoHeight);
    const fps = Number.isFinite(s.framesPerSecond) ? ` @ ${Math.round(s.framesPerSecond)} fps` : "";
    const rows = [
      ["Bitrate in", format.bitrate(s.bitrateBps)],
      ["Resolution", (res || "—") + fps],
      ["Frames decoded", format.count(this.framesDecoded())],
      ["Frames dropped", format.count(s.framesDropped)],
      ["Packets lost", format.count(s.packetsLost)],
      ["Jitter buffer", format.ms(s.jitterBufferMs)],
      ["Round trip", format.ms(s.rttMs)],
      ["Latency (estimate)", Number.isFinite(s.latencyMs) ? `≈ ${format.ms(s.latencyMs)}` : "—"],
      ["Codecs", [s.videoCodec, s.audioCodec].filter(Boolean).join(" + ") || "—"],
      ["Connection", this.pc?.connectionState || "—"],
      ["Served by", this.servedBy || "—"],
    ];
    const list = this.parts["stats-list"];
    if (list.children.length !== rows.length * 2) {
      list.replaceChildren(...rows.flatMap(([k]) => [el("dt", k), el("dd", "")]));
    }
    rows.forEach(([, value], i) => {
      const dd = list.children[i * 2 + 1];
      if (dd.textContent !== value) dd.textContent = value;
    });
  }

  setupControls() {
    const { unmute, fullscreen, quality } = this.parts;
    const v = this.video;
    quality.addEventListener("change", () => this.setLayer(quality.value));
    unmute.addEventListener("click", () => {
      v.muted = false;
      v.play().catch(() => {
        v.muted = true;
      });
    });
    v.addEventListener("volumechange", () => this.renderUnmute());
    this.parts["stats-toggle"].addEventListener("click", () => this.toggleStats());

    const canFullscreen = this.screen.requestFullscreen || v.webkitEnterFullscreen;
    fullscreen.hidden = !canFullscreen;
    fullscreen.addEventListener("click", () => this.toggleFullscreen());
    this.screen.addEventListener("dblclick", () => this.toggleFullscreen());

    // The element's size follows the stream: keep the facts current, and
    // see a switched layer arrive.
    v.addEventListener("resize", () => {
      this.renderStats();
      this.onResize();
    });

    this.onKey = (e) => {
      if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.target?.closest?.("input, textarea, select, [contenteditable]")) return;
      switch (e.key.toLowerCase()) {
        case "s":
          this.toggleStats();
          break;
        case "m":
          if (v.muted) unmute.click();
          else v.muted = true;
          break;
        case "f":
          this.toggleFullscreen();
          break;
        default:
          return;
      }
      e.preventDefault();
    };
    document.addEventListener("keydown", this.onKey);
  }

  toggleStats() {
    const box = this.parts.stats;
    box.hidden = !box.hidden;
    this.parts["stats-toggle"].setAttribute("aria-pressed", String(!box.hidden));
    this.renderStats();
  }

  toggleFullscreen() {
    if (document.fullscreenElement) {
      document.exitFullscreen().catch(() => {});
    } else if (this.screen.requestFullscreen) {
      this.screen.requestFullscreen().catch(() => {});
    } else if (this.video.webkitEnterFullscreen) {
      this.video.webkitEnterFullscreen(); // iOS: only the video itself can go fullscreen
    }
  }
}

function el(tag, text) {
  const node = document.createElement(tag);
  node.textContent = text;
  return node;
}
