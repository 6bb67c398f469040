// The page's entry point. "/watch/{channel}" plays that channel; "/" lists
// the channels and, when exactly one is live, plays it in place.
//
// A private channel's watch link carries a viewer token
// ("/watch/77?token=<jwt>"): it is taken out of the address bar first
// thing and kept in memory for the player (see token.js).
//
// "?layer=<rid>" pins the video layer of a simulcast channel (the quality
// menu's choice): it is no secret and stays in the address, which the
// menu keeps in step with the choice (see quality.js).
//
// For automated tests, window.lightspeed reflects the player at all times
// and <body data-state> follows its state.

import { Player } from "./player.js";
import { ChannelPoller, ChannelList } from "./channels.js";
import { takeToken } from "./token.js";
import { readLayer, withLayer } from "./quality.js";

// Read once and removed from the address at once, on every page: only the
// watch page uses it.
const token = takeToken();

// The layer to ask for ("" for the highest), from the address and then
// from the quality menu; it carries over to the next channel played.
let layer = readLayer(location.search);

const poller = new ChannelPoller("/api/channels", 3000);
let player = null;
let pageState = "connecting"; // the state when no player is shown

function setState(state) {
  document.body.dataset.state = state;
}

window.lightspeed = {
  get state() {
    return player ? player.state : pageState;
  },
  get channel() {
    return player ? player.channel : null;
  },
  framesDecoded() {
    return player ? player.framesDecoded() : 0;
  },
  get videoWidth() {
    return player ? player.video.videoWidth : 0;
  },
  get videoHeight() {
    return player ? player.video.videoHeight : 0;
  },
  get pc() {
    return player ? player.pc : null;
  },
  get reconnects() {
    return player ? player.reconnects : 0;
  },
  get stats() {
    return player ? player.snap || null : null;
  },
  get message() {
    return player ? player.message : "";
  },
  get layer() {
    return player ? player.layer : layer;
  },
};

// chooseLayer takes the quality menu's choice and writes it to the
// address (replacing the history entry: a choice is not a page).
function chooseLayer(next) {
  layer = next;
  history.replaceState(history.state, "", location.pathname + withLayer(location.search, layer) + location.hash);
}

function play(channel, token = "") {
  player?.destroy();
  const stage = document.getElementById("stage");
  stage.hidden = false;
  player = new Player(stage, channel, { onStateChange: setState, token, layer, onLayerChange: chooseLayer });
  setState(player.state);
  player.start();
}

// entryOf finds a channel in a poll result: undefined when it is not
// listed (private channels never are), null when the list could not be
// fetched.
function entryOf(channels, channel) {
  return channels === null ? null : channels.find((c) => c.channel === channel);
}

function watchPage(channel) {
  document.title = `Channel ${channel} · Lightspeed`;
  play(channel, token);
  poller.subscribe((channels) => player.setInfo(entryOf(channels, channel)));
}

function listPage() {
  const section = document.getElementById("channels");
  const title = section.querySelector(".section-title");
  const empty = document.getElementById("channels-empty");
  const failed = document.getElementById("channels-error");
  const list = new ChannelList(document.getElementById("channel-list"));
  section.hidden = false;

  poller.subscribe((channels) => {
    failed.hidden = channels !== null;
    if (channels === null) return;
    list.render(channels);
    empty.hidden = channels.length > 0;

    const live = channels.filter((c) => c.live);
    if (live.length === 1 && player?.channel !== live[0].channel) {
      play(live[0].channel);
      document.title = `Channel ${live[0].channel} · Lightspeed`;
    }
    title.textContent = player ? "All channels" : "Channels";
    if (player) {
      player.setInfo(entryOf(channels, player.channel));
    } else {
      pageState = "offline";
      setState(pageState);
    }
  });
}

const match = location.pathname.match(/^\/watch\/(\d+)$/);
if (match) {
  watchPage(Number(match[1]));
} else {
  listPage();
}
poller.start();

// Leaving ends the session on the server (keepalive DELETE); a page
// restored from the back/forward cache starts again.
addEventListener("pagehide", () => {
  poller.stop();
  player?.stop();
});
addEventListener("pageshow", (e) => {
  if (!e.persisted) return;
  poller.start();
  player?.start();
});
