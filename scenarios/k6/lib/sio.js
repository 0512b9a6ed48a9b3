// Socket.IO v4 over a plain k6/ws WebSocket (Engine.IO 4 framing, docs/contract.md §2).
//
//   server  0{"sid","pingInterval","pingTimeout",...}   Engine.IO open
//   client  40{"token":"..."}                           Socket.IO connect with auth
//   server  40{"sid"}  |  44{"message"}                 connected | connect refused
//   both    42["name",payload]                          event
//   server  2  -> client 3                              Engine.IO ping / pong
//   server  41 (namespace disconnect), 1 (Engine.IO close)

/** Frame kinds returned by `kind()`. */
export const OPEN = 'open';
export const CONNECTED = 'connected';
export const REFUSED = 'refused';
export const EVENT = 'event';
export const PING = 'ping';
export const DISCONNECT = 'disconnect';
export const OTHER = 'other';

/** The kind of one Engine.IO text frame (only its first two characters are looked at). */
export function kind(text) {
  if (typeof text !== 'string' || text.length === 0) return OTHER;
  const c0 = text.charCodeAt(0);
  if (c0 === 0x34 /* 4 */) {
    const c1 = text.charCodeAt(1);
    if (c1 === 0x32 /* 2 */) return EVENT;
    if (c1 === 0x30 /* 0 */) return CONNECTED;
    if (c1 === 0x34 /* 4 */) return REFUSED;
    if (c1 === 0x31 /* 1 */) return DISCONNECT;
    return OTHER;
  }
  if (c0 === 0x32 /* 2 */) return PING;
  if (c0 === 0x30 /* 0 */) return OPEN;
  if (c0 === 0x31 /* 1 */) return DISCONNECT;
  return OTHER;
}

/** `[name, payload]` of a `42[...]` frame (parsed once), or null when it is not one. */
export function parseEvent(text) {
  let arr;
  try {
    arr = JSON.parse(text.substring(2));
  } catch (e) {
    return null;
  }
  if (!Array.isArray(arr) || typeof arr[0] !== 'string') return null;
  return arr;
}

/** The JSON object after a two- or one-character prefix (`40{..}`, `44{..}`, `0{..}`), or null. */
export function parseObject(text, prefixLength) {
  try {
    const value = JSON.parse(text.substring(prefixLength));
    return value !== null && typeof value === 'object' ? value : null;
  } catch (e) {
    return null;
  }
}

/** The `42[...]` frame of an event. */
export function event(name, payload) {
  return payload === undefined ? `42${JSON.stringify([name])}` : `42${JSON.stringify([name, payload])}`;
}

/** The Socket.IO connect frame with the access token in `auth` (never in the query string). */
export function connectFrame(token) {
  return `40${JSON.stringify({ token })}`;
}

export const PONG = '3';

/**
 * The status a refused connect (`44{…}`) stands for: 429 when the server says it was rate
 * limited (`data.code` RATE_LIMITED, or "rate limit" in the message), else 401 (token refused:
 * RingRift's only reason at 2aa9f89b5).
 */
export function refusedStatus(text) {
  const body = parseObject(text, 2);
  const data = body && body.data;
  const code = data && typeof data === 'object' ? data.code : undefined;
  const message = body && typeof body.message === 'string' ? body.message : '';
  return code === 'RATE_LIMITED' || /rate.?limit/i.test(message) ? 429 : 401;
}
