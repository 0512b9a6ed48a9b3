// A user's own k6 script, written the way k6's examples are: its own scenarios and
// thresholds, no pytest-prodval contract (no PRODVAL_CONFIG, no phase tags, no summary).
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE_URL;

export const options = {
  scenarios: {
    api: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.API_RATE || 40),
      timeUnit: '1s',
      duration: __ENV.API_DURATION || '6s',
      preAllocatedVUs: 4,
      maxVUs: 8,
    },
  },
  thresholds: {
    http_req_duration: ['p(95)<500'],
    'http_req_duration{name:health}': ['p(90)<400'],
    http_req_failed: ['rate<0.5'],
    checks: ['rate>0.5'],
  },
};

export default function () {
  // Every fourth iteration asks for a route that needs a token it does not send: a 401.
  if (__ITER % 4 === 3) {
    const res = http.get(`${BASE}/api/games/lobby/available`, { tags: { name: 'lobby' } });
    check(res, { 'lobby refuses without a token': (r) => r.status === 401 });
  } else {
    const res = http.get(`${BASE}/health`, { tags: { name: 'health' } });
    check(res, { 'health is 200': (r) => r.status === 200 });
  }
}
