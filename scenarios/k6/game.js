// pytest-prodval k6 script (docs/design.md §2): human players who log in with their own pool
// user, find or create games, play them over the WebSocket (with AI seats), plus an optional
// WebSocket companion that pings over long-lived connections.
//
// Environment: PRODVAL_CONFIG (JSON, no secrets), LOADTEST_USER_POOL_PASSWORD (secret).
import exec from 'k6/execution';
import http from 'k6/http';
import { Api } from './lib/api.js';
import { Companion } from './lib/companion.js';
import { buildOptions, checkEffectiveScenarios, parseConfig, refuseOverrides } from './lib/config.js';
import { emitZeroCounters, initPhase } from './lib/metrics.js';
import { Player } from './lib/player.js';

const cfg = parseConfig(__ENV.PRODVAL_CONFIG);
refuseOverrides(__ENV);
const PASSWORD = __ENV.LOADTEST_USER_POOL_PASSWORD;
if (!PASSWORD) {
  throw new Error('LOADTEST_USER_POOL_PASSWORD is not set: the pool password comes only from the environment');
}

export const options = buildOptions(cfg);

// k6's own http_req_failed agrees with req_errors: 2xx is expected, and join also accepts 409.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }));

/** Pool user n (1-based, wrapping at the pool size). */
function poolEmail(n) {
  const index = ((n - 1) % cfg.pool.size) + 1;
  return `${cfg.pool.prefix}${index}@${cfg.pool.domain}`;
}

// Per-VU state, created lazily on the first iteration (exec.vu is not known in init).
let player = null;
let companionVu = null;

export function setup() {
  checkEffectiveScenarios(cfg, exec.test.options);
  const t0 = Date.now();
  initPhase(t0, cfg.steady);
  emitZeroCounters();
  return { t0 };
}

export function players(data) {
  initPhase(data.t0, cfg.steady);
  if (player === null) {
    player = new Player(cfg, new Api(cfg, poolEmail(exec.vu.idInTest), PASSWORD));
  }
  player.iteration();
}

export function companion(data) {
  initPhase(data.t0, cfg.steady);
  if (companionVu === null) {
    // VU ids are unique across both scenarios, so id -> pool user keeps companions on users
    // no player uses whenever the pool has at least as many users as VUs in total.
    companionVu = new Companion(cfg, new Api(cfg, poolEmail(exec.vu.idInTest), PASSWORD));
  }
  companionVu.iteration();
}

export function handleSummary(data) {
  return { [cfg.summaryPath]: JSON.stringify(data), stdout: '' };
}
