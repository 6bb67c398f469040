// The viewer token of a private channel's watch link
// ("/watch/77?token=<jwt>", as `gateway tokens issue` prints it).
//
// The page reads it once, at load, and takes it out of the address bar
// at once, so that it is not bookmarked, shared, kept in the history or
// sent as a Referer. From then on it lives in memory only: never in
// storage, never in the console, never in a URL; it travels only as the
// WHEP offer's "Authorization: Bearer" header.

const PARAM = "token";

/**
 * takeToken returns the token of loc's query ("" when there is none or
 * it is empty) and, when the query has one, replaces the current history
 * entry with the same address without it: same path, the other query
 * parameters as they were, same fragment. loc and hist are the page's
 * location and history (parameters so that tests can pass fakes).
 */
export function takeToken(loc = globalThis.location, hist = globalThis.history) {
  const { token, search } = splitToken(loc.search);
  if (token === null) return "";
  hist.replaceState(hist.state, "", loc.pathname + search + loc.hash);
  return token;
}

/**
 * splitToken parses a query string ("?a=1&token=x", with or without the
 * "?"): token is the value of its first "token" parameter (null when there
 * is none), search the query without any "token" parameter, the others
 * left byte for byte ("?a=1", or "" when nothing is left).
 */
export function splitToken(query) {
  let token = null;
  const kept = [];
  for (const part of query.replace(/^\?/, "").split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const name = decode(eq < 0 ? part : part.slice(0, eq));
    if (name !== PARAM) {
      kept.push(part);
      continue;
    }
    if (token === null) token = decode(eq < 0 ? "" : part.slice(eq + 1)).trim();
  }
  return { token, search: kept.length > 0 ? "?" + kept.join("&") : "" };
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
