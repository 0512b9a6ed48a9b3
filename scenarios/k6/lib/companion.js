// The WebSocket companion: one long-lived, authenticated connection per VU that pings every
// pingIntervalMs and measures ping -> pong, until the scenario ends; reconnects when dropped.
import { sleep } from 'k6';
import exec from 'k6/execution';
import ws from 'k6/ws';
import { closeStatus } from './api.js';
import { setPhase, wsErrors, wsMessageLatency, wsRateLimited } from './metrics.js';

const AUTH_TIMEOUT_MS = 10000;
const END_MARGIN_MS = 500;
const RETRY_S = 1;
const ERROR_TAGS = { rate_limited: { code: 'rate_limited' }, unauthorized: { code: 'unauthorized' }, other: { code: 'other' } };

export class Companion {
  constructor(cfg, api) {
    this.cfg = cfg;
    this.api = api;
    this.pingMs = cfg.wsCompanion.pingIntervalMs;
    this.params = { tags: { name: 'ws_companion' } };
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
      sleep(RETRY_S);
      return;
    }
    const st = { sampled: false, authed: false, opened: Date.now() };
    const self = this;
    setPhase();
    let res = null;
    try {
      res = ws.connect(this.cfg.wsUrl, this.params, function (socket) {
        socket.on('open', () => socket.send(JSON.stringify({ type: 'auth', token: self.api.token })));
        socket.on('message', (text) => self.onMessage(socket, st, text));
        socket.on('close', (code) => {
          if (!st.sampled) self.sample(st, closeStatus(code));
        });
        socket.on('error', () => {});
        socket.setTimeout(() => socket.close(), Math.max(1, endAt - Date.now()));
        socket.setInterval(() => {
          if (!st.authed && Date.now() - st.opened > AUTH_TIMEOUT_MS) {
            if (!st.sampled) self.sample(st, 0);
            socket.close();
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

  onMessage(socket, st, text) {
    const now = Date.now();
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (msg.type === 'pong') {
      if (typeof msg.t === 'number') {
        setPhase();
        wsMessageLatency.add(now - msg.t);
      }
    } else if (msg.type === 'auth_ok') {
      st.authed = true;
      this.sample(st, 101);
      socket.setInterval(() => socket.send(JSON.stringify({ type: 'ping', t: Date.now() })), this.pingMs);
    } else if (msg.type === 'error') {
      setPhase();
      const tags = ERROR_TAGS[msg.code] || ERROR_TAGS.other;
      wsErrors.add(1, tags);
      if (msg.code === 'rate_limited' && st.authed) wsRateLimited(); // before auth: the 4429 close counts
      if (msg.code === 'unauthorized' && !st.sampled) this.sample(st, 401);
    }
  }
}
