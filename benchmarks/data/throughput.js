// Generator throughput (benchmarks/bench_generator.py): VUs as fast as they can against nginx on
// loopback, in the style of k6's examples. Same script for the bare and the plugin runs.
import http from 'k6/http';

export const options = {
  scenarios: { load: { executor: 'constant-vus', vus: Number(__ENV.BENCH_VUS || 20), duration: __ENV.BENCH_DURATION || '15s' } },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

export default function () {
  http.get(__ENV.TARGET_URL, { tags: { name: 'item' } });
}

export function handleSummary(data) {
  return { [__ENV.PRODVAL_SUMMARY_PATH]: JSON.stringify(data) };
}
