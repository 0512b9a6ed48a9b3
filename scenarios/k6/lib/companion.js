// The WebSocket companion: one long-lived Socket.IO session per VU that sends `diagnostic:ping`
// every pingIntervalMs and measures ping -> `diagnostic:pong` (ws_message_latency), until the
// scenario ends; reconnects when dropped. RingRift allows 60 pings per 10 s per socket: the
// companion never sends more than PING_BUDGET in any 10 s window.
import { sleep } from 'k6';
import exec from 'k6/execution';
import ws from 'k6/ws';
import { setPhase, tagOf, wsErrors, wsMessageLatency, wsRateLimited } from './metrics.js';
import * as sio from './sio.js';

const CONNECT_TIMEOUT_MS = 10000;
const END_MARGIN_MS = 500;
const RETRY_S = 1;
const PING_WINDOW_MS = 10000;
const PING_BUDGET = 50; // < the server's 60 per 10 s
const MIN_INTERVAL_MS = PING_WINDOW_MS / PING_BUDGET; // 200 ms

export class Companion {
  constructor(cfg, api) {
    this.cfg = cfg;
    this.api = api;
    this.pingMs = Math.max(cfg.wsCompanion.pingIntervalMs, MIN_INTERVAL_MS);
    this.params = { tags: { name: 'ws_companion' }, headers: api.wsHeaders };
    this.sequence = 0;
  }

  /** The wall-clock time this scenario stops (its start + durationS). */
  endAt() {
    return exec.scenario.startTime + this.cfg.wsCompanion.durationS * 1000 - END_MARGIN_MS;
  }

  /** One connection, held until the end of the scenario (a dropped one returns early). */
  iteration() {
    const endAt = this.endAt();
    if (Date.now() >= endAt - 1000) {
      sleep(Math.max(0, (endAt - Date.now()) / 1000) + 0.1);
      return;
    }
    if (!this.api.ensureToken()) {
      sleep(Math.min(this.api.backoffMs(RETRY_S * 1000), Math.max(0, endAt - Date.now())) / 1000);
      return;
    }
    const st = { sampled: false, connected: false, closing: false, opened: Date.now(), sent: [], socket: null };
    const self = this;
    setPhase();
    let res = null;
    try {
      res = ws.connect(this.cfg.wsUrl, this.params, function (socket) {
        st.socket = socket;
        socket.on('message', (text) => self.onFrame(st, text));
        socket.on('close', () => {
          st.closing = true;
          if (!st.sampled) self.sample(st, 0);
        });
        socket.on('error', () => {});
        socket.setTimeout(() => self.close(st), Math.max(1, endAt - Date.now()));
        socket.setInterval(() => {
          if (!st.connected && Date.now() - st.opened > CONNECT_TIMEOUT_MS) {
            if (!st.sampled) self.sample(st, 0);
            self.close(st);
          }
        }, 1000);
      });
    } catch (e) {
      res = null;
    }
    if (!st.sampled) this.sample(st, res && res.status && res.status !== 101 ? res.status : 0);
    if (Date.now() < endAt - 1000) sleep(RETRY_S); // dropped early: back off, then reconnect
  }

  sample(st, status) {
    st.sampled = true;
    this.api.wsConnected(status);
  }

  close(st) {
    if (st.closing) return;
    st.closing = true;
    st.socket.close();
  }

  send(st, frame) {
    if (!st.closing) st.socket.send(frame);
  }

  ping(st) {
    const now = Date.now();
    // Sliding window: the PING_BUDGET-th previous ping must be older than the window.
    if (st.sent.length >= PING_BUDGET) {
      if (now - st.sent[0] < PING_WINDOW_MS) return;
      st.sent.shift();
    }
    st.sent.push(now);
    this.sequence++;
    this.send(st, sio.event('diagnostic:ping', { timestamp: now, vu: exec.vu.idInTest, sequence: this.sequence }));
  }

  onFrame(st, text) {
    switch (sio.kind(text)) {
      case sio.EVENT: {
        const ev = sio.parseEvent(text);
        if (ev !== null) this.onEvent(st, ev[0], ev[1]);
        break;
      }
      case sio.PING:
        this.send(st, sio.PONG);
        break;
      case sio.OPEN:
        this.send(st, sio.connectFrame(this.api.token));
        break;
      case sio.CONNECTED:
        st.connected = true;
        this.sample(st, 101);
        st.socket.setInterval(() => this.ping(st), this.pingMs);
        break;
      case sio.REFUSED:
        if (!st.sampled) this.sample(st, sio.refusedStatus(text));
        this.close(st);
        break;
      case sio.DISCONNECT:
        this.close(st);
        break;
      default:
        break;
    }
  }

  onEvent(st, name, payload) {
    if (name === 'diagnostic:pong') {
      const now = Date.now();
      if (payload !== null && typeof payload === 'object' && typeof payload.timestamp === 'number') {
        setPhase();
        wsMessageLatency.add(now - payload.timestamp);
      }
    } else if (name === 'error') {
      setPhase();
      const code = payload !== null && typeof payload === 'object' ? payload.code : undefined;
      wsErrors.add(1, tagOf('code', code));
      if (code === 'RATE_LIMITED' && st.connected) wsRateLimited();
    }
  }
}
