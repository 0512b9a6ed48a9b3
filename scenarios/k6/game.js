// pytest-prodval k6 script (docs/contract.md §6, metric contract docs/design.md §2): human
// players who log in with their own pool user, find or create games over RingRift's HTTP API and
// lobby events, and play them over Socket.IO v4 (k6/ws with Engine.IO framing), with AI seats;
// plus an optional WebSocket companion that pings over long-lived connections.
//
// Environment: PRODVAL_CONFIG (JSON, no secrets), LOADTEST_USER_POOL_PASSWORD (secret),
// RATE_LIMIT_BYPASS_TOKEN (optional secret; sent as X-RateLimit-Bypass-Token on every HTTP
// request and on the WebSocket handshake, never logged, tagged or put in setup data).
import exec from 'k6/execution';
import http from 'k6/http';
import { Api } from './lib/api.js';
import { Companion } from './lib/companion.js';
import { buildOptions, checkEffectiveScenarios, parseConfig, poolEmail, refuseOverrides } from './lib/config.js';
import { COUNTER_NAMES, REQUEST_NAMES, emitZeroCounters, initPhase } from './lib/metrics.js';
import { Player } from './lib/player.js';

const cfg = parseConfig(__ENV.PRODVAL_CONFIG, { requestNames: REQUEST_NAMES, counters: COUNTER_NAMES });
refuseOverrides(__ENV);
const PASSWORD = __ENV.LOADTEST_USER_POOL_PASSWORD;
if (!PASSWORD) {
  throw new Error('LOADTEST_USER_POOL_PASSWORD is not set: the pool password comes only from the environment');
}
const BYPASS_TOKEN = __ENV.RATE_LIMIT_BYPASS_TOKEN || '';

export const options = buildOptions(cfg);

// k6's own http_req_failed agrees with req_errors: 2xx is expected (a join also accepts its
// 400 race answers, by a per-request callback in lib/api.js).
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }));

// Per-VU state, created lazily on the first iteration (exec.vu is not known in init).
let player = null;
let companionVu = null;

function api() {
  return new Api(cfg, poolEmail(cfg.pool, exec.vu.idInTest), PASSWORD, BYPASS_TOKEN);
}

export function setup() {
  checkEffectiveScenarios(cfg, exec.test.options);
  if (PASSWORD === cfg.facts.archivePasswordPlaceholder) {
    // `k6 archive` runs the init code without secrets; the runner's Secret must replace it.
    throw new Error('LOADTEST_USER_POOL_PASSWORD is the archive placeholder: the runner got no password Secret');
  }
  const t0 = Date.now();
  initPhase(t0, cfg.steady);
  emitZeroCounters();
  return { t0 };
}

export function players(data) {
  initPhase(data.t0, cfg.steady);
  if (player === null) player = new Player(cfg, api());
  player.iteration();
}

export function companion(data) {
  initPhase(data.t0, cfg.steady);
  // VU ids are unique across both scenarios, so id -> pool user keeps companions on users no
  // player uses whenever the pool has at least as many users as VUs in total.
  if (companionVu === null) companionVu = new Companion(cfg, api());
  companionVu.iteration();
}

// One summary per instance when k6 runs split (segments, k6-operator runner pods):
// PRODVAL_SUMMARY_PATH, set per instance, wins over the config's single path.
export function handleSummary(data) {
  return { [__ENV.PRODVAL_SUMMARY_PATH || cfg.summaryPath]: JSON.stringify(data), stdout: '' };
}
