// Reading RTCPeerConnection.getStats() into the few numbers the stats
// overlay shows. Works with the stats of Chromium, Firefox and Safari:
// anything a browser does not report is left undefined.

/**
 * summarize turns one stats report (anything with forEach and get, like an
 * RTCStatsReport or a Map) into a snapshot. prev is the previous snapshot,
 * if any, so that rates cover the last interval rather than the whole call.
 */
export function summarize(report, now, prev) {
  let video, audio, transport;
  const pairs = [];
  const codecs = new Map();
  report.forEach((s) => {
    switch (s.type) {
      case "inbound-rtp":
        if (s.isRemote) break; // old Firefox mixed remote stats in
        if ((s.kind || s.mediaType) === "video") video = s;
        else if ((s.kind || s.mediaType) === "audio") audio = s;
        break;
      case "transport":
        transport = s;
        break;
      case "candidate-pair":
        pairs.push(s);
        break;
      case "codec":
        codecs.set(s.id, s);
        break;
    }
  });

  const snap = {
    at: now,
    bytesReceived: (video?.bytesReceived || 0) + (audio?.bytesReceived || 0),
    framesDecoded: video?.framesDecoded,
    framesDropped: video?.framesDropped,
    framesPerSecond: video?.framesPerSecond,
    width: video?.frameWidth,
    height: video?.frameHeight,
    packetsLost: sumDefined(video?.packetsLost, audio?.packetsLost),
    jitterBufferDelay: video?.jitterBufferDelay,
    jitterBufferEmittedCount: video?.jitterBufferEmittedCount,
    videoCodec: codecName(codecs.get(video?.codecId)),
    audioCodec: codecName(codecs.get(audio?.codecId)),
  };

  if (prev && now > prev.at && snap.bytesReceived >= prev.bytesReceived) {
    snap.bitrateBps = ((snap.bytesReceived - prev.bytesReceived) * 8 * 1000) / (now - prev.at);
  }

  // Jitter buffer delay per frame: over the last interval when frames
  // left the buffer in it, else over the whole call.
  const emitted = snap.jitterBufferEmittedCount - (prev?.jitterBufferEmittedCount ?? 0);
  if (prev && emitted > 0 && snap.jitterBufferDelay >= prev.jitterBufferDelay) {
    snap.jitterBufferMs = ((snap.jitterBufferDelay - prev.jitterBufferDelay) / emitted) * 1000;
  } else if (snap.jitterBufferEmittedCount > 0) {
    snap.jitterBufferMs = (snap.jitterBufferDelay / snap.jitterBufferEmittedCount) * 1000;
  }

  const pair = selectedPair(report, transport, pairs);
  if (Number.isFinite(pair?.currentRoundTripTime)) {
    snap.rttMs = pair.currentRoundTripTime * 1000;
  }

  // The estimate: time in the jitter buffer plus the one-way network
  // delay, taken as half the round trip. It leaves out capture, encoding,
  // the server and decoding, so it is a lower bound of glass-to-glass.
  if (Number.isFinite(snap.jitterBufferMs)) {
    snap.latencyMs = snap.jitterBufferMs + (snap.rttMs ?? 0) / 2;
  }
  return snap;
}

// selectedPair finds the candidate pair in use: the transport names it in
// Chromium and Safari; Firefox marks it "selected".
function selectedPair(report, transport, pairs) {
  if (transport?.selectedCandidatePairId) {
    const p = report.get(transport.selectedCandidatePairId);
    if (p) return p;
  }
  return (
    pairs.find((p) => p.selected) ||
    pairs.find((p) => p.nominated && p.state === "succeeded") ||
    pairs.find((p) => p.state === "succeeded")
  );
}

function codecName(codec) {
  if (!codec?.mimeType) return undefined;
  return codec.mimeType.replace(/^(video|audio)\//i, "").toUpperCase();
}

function sumDefined(a, b) {
  if (a === undefined && b === undefined) return undefined;
  return (a || 0) + (b || 0);
}
