// A deterministic k6 workload for the exactness acceptance test (tests/test_exact_segments.py),
// in the style of k6's examples: 8 VUs x 25 iterations against a loopback HTTP server. Every
// value the criteria read depends only on which iterations ran, never on timing or on how the
// test is split into execution segments: `exec.scenario.iterationInTest` is global across
// instances (which VU runs which iteration is not, so values never depend on the VU). A VU is one "game" (3 "players") from its first iteration to its
// last, so concurrency peaks at 8 games / 24 players whenever the instances overlap.
import exec from 'k6/execution';
import http from 'k6/http';
import { sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const work = new Trend('work_ms');
const slow = new Rate('work_slow');
const units = new Counter('work_units_total');
const games = new Counter('games_active_delta');
const players = new Counter('players_active_delta');
const ITERATIONS = Number(__ENV.WORK_ITERATIONS || 25);
const PAUSE_S = Number(__ENV.WORK_PAUSE_S || 0.06);

export const options = {
  scenarios: { work: { executor: 'per-vu-iterations', vus: Number(__ENV.WORK_VUS || 8), iterations: ITERATIONS, maxDuration: __ENV.WORK_MAX_DURATION || '20s' } },
  thresholds: { 'work_ms': ['p(95)<900'], 'work_slow': ['rate<0.5'], 'work_units_total': ['count>=0'] },
};

export function setup() {
  games.add(0);
  players.add(0);
  return { t0: Date.now() };
}

export default function () {
  const n = exec.scenario.iterationInTest;
  const first = exec.vu.iterationInScenario === 0;
  const last = exec.vu.iterationInScenario === ITERATIONS - 1;
  if (first) { games.add(1); players.add(3); }
  http.get(`${__ENV.TARGET_URL}/item/${n}`, { tags: { name: 'item' } });
  const value = ((n * 7919) % 1000) + 0.125;
  work.add(value);
  slow.add(value > 800);
  units.add(n % 7);
  if (PAUSE_S > 0) sleep(PAUSE_S);
  if (last) { games.add(-1); players.add(-3); }
}
