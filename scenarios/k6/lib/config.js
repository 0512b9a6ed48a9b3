// PRODVAL_CONFIG (design.md §2): parse, validate, and turn into k6 options.
// Runs in the init context of every VU: keep it cheap and never log secrets.

const DEFAULT_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];
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

/** Parse and validate the JSON text of PRODVAL_CONFIG; throws a clear Error when it is unusable. */
export function parseConfig(text) {
  if (text === undefined || text === null || text === '') {
    fail('environment variable PRODVAL_CONFIG is not set (the pytest-prodval runner passes it; see docs/design.md §2)');
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
  requireString(cfg, 'wsUrl', '');
  cfg.stages = validateStages(cfg.stages);
  const steady = requireObject(cfg, 'steady', '');
  requireNumber(steady, 'startS', 'steady.', 0);
  requireNumber(steady, 'endS', 'steady.', steady.startS);
  requireNumber(cfg, 'gracefulRampDownS', '', 0);
  const game = requireObject(cfg, 'game', '');
  requireString(game, 'board', 'game.');
  requireInt(game, 'playersPerGame', 'game.', 1);
  requireInt(game, 'aiSeats', 'game.', 0);
  if (game.aiSeats >= game.playersPerGame) fail('game.aiSeats must leave at least one human seat');
  requireInt(game, 'movesPerGame', 'game.', 1);
  requireNumber(game, 'thinkTimeMs', 'game.', 0);
  requireNumber(game, 'stallMs', 'game.', 1);
  const pool = requireObject(cfg, 'pool', '');
  requireString(pool, 'prefix', 'pool.');
  requireString(pool, 'domain', 'pool.');
  requireInt(pool, 'size', 'pool.', 1);
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
  if (cfg.summaryTrendStats === undefined || cfg.summaryTrendStats === null) cfg.summaryTrendStats = DEFAULT_TREND_STATS;
  if (!Array.isArray(cfg.summaryTrendStats) || cfg.summaryTrendStats.length === 0) {
    fail('summaryTrendStats must be a non-empty array');
  }
  requireString(cfg, 'summaryPath', '');
  return cfg;
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
