// PRODVAL_CONFIG (docs/contract.md §6): parse, validate, and turn into k6 options.
// Runs in the init context of every VU: keep it cheap and never log secrets.

const DURATION_RE = /^(\d+(\.\d+)?(ms|s|m|h))+$/;
// Environment variables that make k6 replace `options.scenarios` with its own: refuse them
// (the original harness silently ran 100 VUs when the scenario said 300).
const OVERRIDE_VARS = ['K6_VUS', 'K6_DURATION', 'K6_STAGES', 'K6_ITERATIONS', 'K6_SCENARIOS'];

function fail(message) {
  throw new Error(`PRODVAL_CONFIG: ${message}`);
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function requireObject(parent, key, where) {
  const value = parent[key];
  if (!isObject(value)) fail(`${where}${key} must be an object`);
  return value;
}

function requireString(parent, key, where) {
  const value = parent[key];
  if (typeof value !== 'string' || value === '') fail(`${where}${key} must be a non-empty string`);
  return value;
}

function requireNumber(parent, key, where, min) {
  const value = parent[key];
  if (typeof value !== 'number' || !isFinite(value) || value < min) {
    fail(`${where}${key} must be a number >= ${min} (got ${JSON.stringify(value)})`);
  }
  return value;
}

function requireInt(parent, key, where, min) {
  const value = requireNumber(parent, key, where, min);
  if (Math.floor(value) !== value) fail(`${where}${key} must be a whole number`);
  return value;
}

function requireBool(parent, key, where) {
  const value = parent[key];
  if (typeof value !== 'boolean') fail(`${where}${key} must be true or false`);
  return value;
}

function validateStages(stages) {
  if (!Array.isArray(stages) || stages.length === 0) fail('stages must be a non-empty array');
  let peak = 0;
  stages.forEach((stage, i) => {
    if (!isObject(stage)) fail(`stages[${i}] must be an object`);
    const duration = requireString(stage, 'duration', `stages[${i}].`);
    if (!DURATION_RE.test(duration)) fail(`stages[${i}].duration ${JSON.stringify(duration)} is not a k6 duration`);
    peak = Math.max(peak, requireInt(stage, 'target', `stages[${i}].`, 0));
  });
  if (peak === 0) fail('stages never go above 0 VUs');
  return stages.map((s) => ({ duration: s.duration, target: s.target }));
}

const BOARD_TYPES = ['square8', 'square19', 'hex8', 'hexagonal'];
const TIME_CONTROL_TYPES = ['blitz', 'rapid', 'classical'];
// The expected race answers to a join (contract §1): a 400 with one of these error codes.
const DEFAULT_GAMES_PER_SESSION = 5;

function requireOneOf(parent, key, where, allowed) {
  const value = requireString(parent, key, where);
  if (allowed.indexOf(value) < 0) fail(`${where}${key} must be one of ${allowed.join(', ')} (got ${JSON.stringify(value)})`);
  return value;
}

function requireIntRange(parent, key, where, min, max) {
  const value = parent[key];
  if (typeof value !== 'number' || Math.floor(value) !== value || value < min || value > max) {
    fail(`${where}${key} must be a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
  }
  return value;
}

function validateGame(cfg) {
  const game = requireObject(cfg, 'game', '');
  if (game.board !== undefined && game.boardType === undefined) {
    fail('game.board is the old key: the config names the board game.boardType (square8, square19, hex8, hexagonal)');
  }
  requireOneOf(game, 'boardType', 'game.', BOARD_TYPES);
  requireIntRange(game, 'playersPerGame', 'game.', 2, 4);
  requireIntRange(game, 'aiSeats', 'game.', 0, 3);
  if (game.aiSeats >= game.playersPerGame) fail('game.aiSeats must leave at least one human seat');
  if (game.aiSeats > 0) {
    const d = game.aiDifficulty;
    if (Array.isArray(d)) {
      if (d.length !== game.aiSeats) fail(`game.aiDifficulty must have one entry per AI seat (${game.aiSeats})`);
      d.forEach((v, i) => {
        if (typeof v !== 'number' || Math.floor(v) !== v || v < 1 || v > 10) {
          fail(`game.aiDifficulty[${i}] must be a whole number from 1 to 10 (got ${JSON.stringify(v)})`);
        }
      });
      game.aiDifficulties = d.slice();
    } else {
      requireIntRange(game, 'aiDifficulty', 'game.', 1, 10);
      game.aiDifficulties = [];
      for (let i = 0; i < game.aiSeats; i++) game.aiDifficulties.push(d);
    }
  } else {
    game.aiDifficulties = [];
  }
  requireInt(game, 'movesPerGame', 'game.', 1);
  requireNumber(game, 'thinkTimeMs', 'game.', 0);
  requireNumber(game, 'stallMs', 'game.', 1);
  const tc = requireObject(game, 'timeControl', 'game.');
  requireOneOf(tc, 'type', 'game.timeControl.', TIME_CONTROL_TYPES);
  requireIntRange(tc, 'initialTime', 'game.timeControl.', 60, 7200);
  requireIntRange(tc, 'increment', 'game.timeControl.', 0, 60);
  if (game.gamesPerSession === undefined || game.gamesPerSession === null) {
    game.gamesPerSession = DEFAULT_GAMES_PER_SESSION;
  } else {
    requireInt(game, 'gamesPerSession', 'game.', 1);
  }
  return game;
}

function validatePool(cfg) {
  const pool = requireObject(cfg, 'pool', '');
  requireString(pool, 'prefix', 'pool.');
  requireString(pool, 'domain', 'pool.');
  requireInt(pool, 'size', 'pool.', 1);
  const format = requireString(pool, 'emailFormat', 'pool.');
  if (format.indexOf('{n}') < 0) fail(`pool.emailFormat must contain {n} (got ${JSON.stringify(format)})`);
  const rest = format.replace(/\{(prefix|domain|n)\}/g, '');
  if (/[{}]/.test(rest)) fail(`pool.emailFormat knows only {prefix}, {n} and {domain} (got ${JSON.stringify(format)})`);
  if (poolEmail(pool, 1).indexOf('@') < 1) {
    fail(`pool.emailFormat must give an e-mail address (got ${JSON.stringify(format)})`);
  }
  return pool;
}

function stringList(facts, key) {
  const value = facts[key];
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v === '')) {
    fail(`facts.${key} must be an array of non-empty strings`);
  }
  return value;
}

/**
 * `facts` (generated by pytest_prodval/facts.py): what Python and this script share. Read:
 * expectedJoinErrors, bypassHeader; checked against the script (fail fast when they disagree):
 * requestNames, counters, concurrencyDeltas, errorClasses.
 */
function validateFacts(cfg, known) {
  // The facts are written once, in pytest_prodval/facts.py, and always sent: no copies here.
  const facts = cfg.facts;
  if (!isObject(facts)) fail('facts must be an object (generated by pytest_prodval/facts.py for_script)');
  if (stringList(facts, 'expectedJoinErrors') === null) fail('facts.expectedJoinErrors is missing');
  if (typeof facts.bypassHeader !== 'string' || !/^[A-Za-z0-9-]+$/.test(facts.bypassHeader)) {
    fail('facts.bypassHeader must be an HTTP header name');
  }
  const disagree = (what, names) => {
    if (names.length > 0) fail(`facts.${what} and the k6 script disagree: ${names.join(', ')} (update scenarios/k6 or pytest_prodval/facts.py)`);
  };
  const requestNames = stringList(facts, 'requestNames');
  if (requestNames !== null) {
    disagree('requestNames', known.requestNames.filter((n) => requestNames.indexOf(n) < 0)
      .concat(requestNames.filter((n) => known.requestNames.indexOf(n) < 0)));
  }
  const counters = stringList(facts, 'counters');
  if (counters !== null) {
    disagree('counters', counters.filter((n) => known.counters.indexOf(n) < 0)
      .concat(known.counters.filter((n) => counters.indexOf(n) < 0)));
  }
  if (facts.concurrencyDeltas !== undefined && facts.concurrencyDeltas !== null) {
    if (!isObject(facts.concurrencyDeltas)) fail('facts.concurrencyDeltas must be an object');
    disagree('concurrencyDeltas', Object.keys(facts.concurrencyDeltas).map((k) => facts.concurrencyDeltas[k])
      .filter((n) => known.counters.indexOf(n) < 0));
  }
  if (facts.errorClasses !== undefined && facts.errorClasses !== null) {
    if (!isObject(facts.errorClasses)) fail('facts.errorClasses must be an object');
    const named = [];
    Object.keys(facts.errorClasses).forEach((k) => {
      const list = facts.errorClasses[k];
      if (!Array.isArray(list)) fail(`facts.errorClasses[${JSON.stringify(k)}] must be an array of counter names`);
      list.forEach((n) => { if (known.counters.indexOf(n) < 0) named.push(n); });
    });
    disagree('errorClasses', named);
  }
  return facts;
}

/**
 * Parse and validate the JSON text of PRODVAL_CONFIG (docs/contract.md §6); throws a clear Error
 * when it is unusable. known: {requestNames, counters} of this script (checked against `facts`).
 */
export function parseConfig(text, known) {
  if (text === undefined || text === null || text === '') {
    fail('environment variable PRODVAL_CONFIG is not set (the pytest-prodval runner passes it; see docs/contract.md §6)');
  }
  let cfg;
  try {
    cfg = JSON.parse(text);
  } catch (e) {
    fail(`not valid JSON (${e.message})`);
  }
  if (!isObject(cfg)) fail('must be a JSON object');
  requireString(cfg, 'scenarioId', '');
  requireString(cfg, 'baseUrl', '');
  if (!/^https?:\/\//.test(cfg.baseUrl)) fail(`baseUrl must start with http:// or https:// (got ${JSON.stringify(cfg.baseUrl)})`);
  requireString(cfg, 'wsUrl', '');
  if (!/^wss?:\/\/[^/]+\/socket\.io\/\?(.*&)?EIO=4(&|$)/.test(cfg.wsUrl) || !/[?&]transport=websocket(&|$)/.test(cfg.wsUrl)) {
    fail(`wsUrl must be the normalised Socket.IO URL ws(s)://HOST:PORT/socket.io/?EIO=4&transport=websocket (got ${JSON.stringify(cfg.wsUrl)})`);
  }
  cfg.stages = validateStages(cfg.stages);
  const steady = requireObject(cfg, 'steady', '');
  requireNumber(steady, 'startS', 'steady.', 0);
  requireNumber(steady, 'endS', 'steady.', steady.startS);
  requireNumber(cfg, 'gracefulRampDownS', '', 0);
  validateGame(cfg);
  validatePool(cfg);
  const auth = requireObject(cfg, 'auth', '');
  if (auth.tokenTtlS !== null && auth.tokenTtlS !== undefined) requireNumber(auth, 'tokenTtlS', 'auth.', 1);
  requireNumber(auth, 'refreshWindowS', 'auth.', 0);
  const ws = requireObject(cfg, 'wsCompanion', '');
  requireBool(ws, 'enabled', 'wsCompanion.');
  if (ws.enabled) {
    requireInt(ws, 'vus', 'wsCompanion.', 1);
    requireNumber(ws, 'pingIntervalMs', 'wsCompanion.', 10);
    requireNumber(ws, 'durationS', 'wsCompanion.', 1);
  }
  if (cfg.thresholds === undefined || cfg.thresholds === null) cfg.thresholds = {};
  if (!isObject(cfg.thresholds)) fail('thresholds must be an object of metric -> [expressions]');
  Object.keys(cfg.thresholds).forEach((metric) => {
    if (!Array.isArray(cfg.thresholds[metric])) fail(`thresholds[${JSON.stringify(metric)}] must be an array`);
  });
  // Written once, in pytest_prodval/facts.py (SUMMARY_TREND_STATS): no copy here.
  if (!Array.isArray(cfg.summaryTrendStats) || cfg.summaryTrendStats.length === 0) {
    fail('summaryTrendStats must be a non-empty array (pytest_prodval/facts.py SUMMARY_TREND_STATS)');
  }
  requireString(cfg, 'summaryPath', '');
  validateFacts(cfg, known || { requestNames: [], counters: [] });
  return cfg;
}

/** The pool e-mail of user n (1-based, wrapping at the pool size). */
export function poolEmail(pool, n) {
  const index = ((n - 1) % pool.size) + 1;
  return pool.emailFormat.replace(/\{prefix\}/g, pool.prefix).replace(/\{domain\}/g, pool.domain)
    .replace(/\{n\}/g, String(index));
}

/**
 * Milliseconds into the players scenario at which its VUs wind down: the start of the last stage
 * when that stage ramps to 0 VUs, else the end of all stages. (k6 cannot tell a VU that it is
 * about to be ramped down; leaving games from here on closes their concurrency intervals before
 * gracefulRampDown cuts the VU off.)
 */
export function windDownAtMs(stages) {
  let total = 0;
  for (let i = 0; i < stages.length; i++) total += durationMs(stages[i].duration);
  const last = stages[stages.length - 1];
  return last.target === 0 ? total - durationMs(last.duration) : total;
}

/** Milliseconds of a k6 duration string ("1m30s", "500ms"). */
export function durationMs(text) {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  let m;
  while ((m = re.exec(text)) !== null) total += parseFloat(m[1]) * unit[m[2]];
  return total;
}

/** Refuse environment overrides that would silently replace the configured scenarios. */
export function refuseOverrides(env) {
  const set = OVERRIDE_VARS.filter((name) => env[name] !== undefined && env[name] !== '');
  if (set.length > 0) {
    throw new Error(`${set.join(', ')} would replace the scenarios built from PRODVAL_CONFIG; unset them`);
  }
}

/** k6 `options` for a validated config. */
export function buildOptions(cfg) {
  const scenarios = {
    players: {
      executor: 'ramping-vus',
      exec: 'players',
      startVUs: 0,
      stages: cfg.stages,
      gracefulRampDown: `${cfg.gracefulRampDownS}s`,
      gracefulStop: `${cfg.gracefulRampDownS}s`,
    },
  };
  if (cfg.wsCompanion.enabled) {
    scenarios.ws_companion = {
      executor: 'constant-vus',
      exec: 'companion',
      vus: cfg.wsCompanion.vus,
      duration: `${cfg.wsCompanion.durationS}s`,
      gracefulStop: '5s',
    };
  }
  return {
    scenarios,
    thresholds: cfg.thresholds,
    summaryTrendStats: cfg.summaryTrendStats,
    setupTimeout: '30s',
    teardownTimeout: '10s',
    // Low-cardinality tags only: no `url` (game ids), no groups; `name` carries the route.
    systemTags: ['status', 'method', 'name', 'scenario', 'expected_response', 'error_code'],
  };
}

/** Throws when the options k6 actually runs with differ from the configured scenarios (CLI --vus/--stage). */
export function checkEffectiveScenarios(cfg, effective) {
  const scenarios = (effective && effective.scenarios) || {};
  const players = scenarios.players;
  const problem = (what) => {
    throw new Error(`k6 is not running the configured scenarios (${what}): do not pass --vus/--duration/--stage/--iterations`);
  };
  if (!players) problem(`no "players" scenario; got ${Object.keys(scenarios).join(', ') || 'none'}`);
  const stages = players.stages || [];
  if (stages.length !== cfg.stages.length) problem('stage count differs');
  for (let i = 0; i < stages.length; i++) {
    if (Number(stages[i].target) !== cfg.stages[i].target) problem(`stage ${i} target differs`);
  }
  if (cfg.wsCompanion.enabled && !scenarios.ws_companion) problem('no "ws_companion" scenario');
}
