// Formatting of numbers for people: bitrates, durations, resolutions.

// A number and its unit stay on one line.
const NBSP = "\u00a0";

/** bitrate formats bits per second: "850 kb/s", "2.5 Mb/s", "6 Mb/s". */
export function bitrate(bps) {
  if (!Number.isFinite(bps) || bps < 0) return "—";
  if (bps >= 1e6) return `${Number((bps / 1e6).toFixed(bps >= 1e7 ? 0 : 1))}${NBSP}Mb/s`;
  return `${Math.round(bps / 1e3)}${NBSP}kb/s`;
}

/** duration formats seconds as "42 s", "12:05" or "3:02:41". */
export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}${NBSP}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** resolution formats "1280×720", or "" when unknown. */
export function resolution(width, height) {
  return width > 0 && height > 0 ? `${width}×${height}` : "";
}

/** ms formats milliseconds: "38 ms", or "—" when unknown. */
export function ms(value) {
  return Number.isFinite(value) ? `${Math.round(value)}${NBSP}ms` : "—";
}

/** count formats an integer with thousands separators, "—" when unknown. */
export function count(value) {
  return Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "—";
}

/** viewers formats "1 viewer", "3 viewers", or "" when unknown. */
export function viewers(n) {
  if (!Number.isFinite(n) || n < 0) return "";
  return n === 1 ? "1 viewer" : `${count(n)} viewers`;
}
