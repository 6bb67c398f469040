// The publish page ("/publish"): sends the camera and microphone, or a
// screen, to this gateway over WHIP, as OBS does. The stream key stays in
// the password field and in memory while a session runs; it is sent only
// as the Bearer token of the POST and the DELETE.
//
// For automated tests, window.lightspeedPublish reflects the state and
// <body data-state> follows it: "idle", "connecting", "live", "stopped"
// or "error".

import * as whip from "./whip.js";
import { watchURL } from "./channels.js";

const WHIP_URL = "/api/whip";

const $ = (id) => document.getElementById(id);
const form = $("publish-form");
const keyInput = $("key");
const sources = $("sources");
const startButton = $("start");
const stopButton = $("stop");
const watchLink = $("watch");
const statusText = $("status");
const badge = $("badge");
const preview = $("preview");

let state = "idle";
let message = "";
let gen = 0; // bumped on every stop: steps of an older start see it and give up
let pc = null;
let stream = null;
let session = null; // { url, key } of the running WHIP session

window.lightspeedPublish = {
  get state() {
    return state;
  },
  get message() {
    return message;
  },
  get channel() {
    return whip.channelOfKey(keyInput.value);
  },
  get pc() {
    return pc;
  },
};

function setState(next, text) {
  state = next;
  message = text;
  document.body.dataset.state = next;
  statusText.textContent = text;
  const labels = { idle: "Not live", connecting: "Connecting", live: "Live", stopped: "Not live", error: "Error" };
  badge.textContent = labels[next];
  badge.className = `badge badge-${{ idle: "offline", stopped: "offline" }[next] || next}`;
  const busy = next === "connecting" || next === "live";
  keyInput.disabled = busy;
  sources.disabled = busy;
  startButton.disabled = busy;
  stopButton.disabled = !busy;
}

// unsupported says why this browser cannot publish here, or "".
function unsupported() {
  if (!window.RTCPeerConnection || !window.RTCRtpSender?.getCapabilities) {
    return "This browser cannot send WebRTC streams.";
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    return "The browser offers no camera on this page: publishing needs HTTPS (or localhost).";
  }
  const video = RTCRtpSender.getCapabilities("video")?.codecs || [];
  if (whip.videoPreferences(video).length === 0) {
    return "This browser has no H.264 encoder for WebRTC, and the server takes H.264 video only. Try Chrome, Edge or Safari.";
  }
  return "";
}

function showChannel() {
  const channel = whip.channelOfKey(keyInput.value);
  watchLink.hidden = channel === null;
  if (channel !== null) {
    watchLink.href = watchURL(channel);
    watchLink.textContent = `Watch channel ${channel}`;
  }
}

function capture(source) {
  if (source === "screen") {
    return navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
  }
  return navigator.mediaDevices.getUserMedia({ video: true, audio: true });
}

async function start() {
  const key = keyInput.value.trim();
  const channel = whip.channelOfKey(key);
  if (channel === null) {
    setState("error", "A stream key looks like 77-secret: the channel number, a dash, then the secret.");
    return;
  }
  teardown();
  const my = ++gen;
  const source = form.elements.source.value;
  setState("connecting", source === "screen" ? "Choose what to share…" : "Asking for the camera and microphone…");

  let media;
  try {
    media = await capture(source);
  } catch (err) {
    if (my === gen) setState("error", `No ${source === "screen" ? "screen" : "camera"}: ${err.message || err.name}`);
    return;
  }
  if (my !== gen) {
    media.getTracks().forEach((t) => t.stop());
    return;
  }
  stream = media;
  preview.srcObject = media;
  const video = media.getVideoTracks()[0];
  if (!video) {
    fail(my, "There is no video to send.");
    return;
  }
  // Sharing ended from the browser's own controls: stop publishing too.
  video.addEventListener("ended", () => {
    if (my === gen) stop("Sharing ended. The channel is offline.");
  });

  setState("connecting", "Connecting…");
  const conn = new RTCPeerConnection();
  pc = conn;
  try {
    // A screen may come without sound: the gateway wants Opus all the
    // same, so the audio transceiver is there, silent.
    const vt = conn.addTransceiver(video, { direction: "sendonly", streams: [media] });
    const at = conn.addTransceiver(media.getAudioTracks()[0] || "audio", { direction: "sendonly", streams: [media] });
    vt.setCodecPreferences(whip.videoPreferences(RTCRtpSender.getCapabilities("video").codecs));
    at.setCodecPreferences(whip.audioPreferences(RTCRtpSender.getCapabilities("audio").codecs));
  } catch (err) {
    fail(my, `Cannot send H.264 and Opus from this browser: ${err.message || err}`);
    return;
  }
  conn.addEventListener("connectionstatechange", () => {
    if (my !== gen) return;
    switch (conn.connectionState) {
      case "connected":
        setState("live", `Live on channel ${channel}.`);
        break;
      case "disconnected":
        setState("connecting", "Connection interrupted. Reconnecting…");
        break;
      case "failed":
        fail(my, "The connection to the server failed.");
        break;
    }
  });

  try {
    const url = await whip.publish(conn, WHIP_URL, key);
    if (my !== gen) {
      whip.unpublish(url, key); // stopped while the offer was in flight
      return;
    }
    session = { url, key };
  } catch (err) {
    const text = err instanceof whip.PublishError ? `The server refused (${err.status}): ${err.message}` : `Cannot reach the server: ${err.message || err}`;
    fail(my, text);
    return;
  }
  if (conn.connectionState === "connected") setState("live", `Live on channel ${channel}.`);
}

// fail ends the attempt my, if it is still the current one, and shows text.
function fail(my, text) {
  if (my !== gen) return;
  teardown();
  setState("error", text);
}

function stop(text = "Stopped. The channel is offline.") {
  teardown();
  setState("stopped", text);
}

// teardown ends the session on the server and releases the devices.
function teardown() {
  gen++;
  if (session) whip.unpublish(session.url, session.key);
  session = null;
  if (pc) pc.close();
  pc = null;
  stream?.getTracks().forEach((t) => t.stop());
  stream = null;
  preview.srcObject = null;
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  start();
});
stopButton.addEventListener("click", () => stop());
keyInput.addEventListener("input", showChannel);
// Leaving the page ends the stream (keepalive DELETE).
addEventListener("pagehide", () => {
  if (state === "connecting" || state === "live") stop();
});

const why = unsupported();
if (why) {
  setState("error", why);
  startButton.disabled = true;
} else {
  if (!navigator.mediaDevices.getDisplayMedia) form.querySelector('input[value="screen"]').disabled = true;
  setState("idle", "Enter the stream key and press Start.");
}
showChannel();
