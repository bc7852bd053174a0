-- wrk script for bench/compare.sh: prints one machine-readable line at the
-- end of a run. wrk measures latency in microseconds.

-- BENCH_PACE_MS > 0: wait that long before each request (the c1p load).
-- wrk starts a request's latency clock when it writes it, after the delay.
local pace = tonumber(os.getenv("BENCH_PACE_MS") or "0") or 0
if pace > 0 then
  delay = function()
    return pace
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50=%d p90=%d p99=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
