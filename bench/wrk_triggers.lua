-- wrk script for bench_triggers.py: NEW_CHAPTER triggers, each with a chapter number no other
-- request uses (every wrk thread counts from its own base), then one JSON line of results.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("base", #threads * 100000000)
end

function init(args)
  counter = 0
  manga = tonumber(os.getenv("BENCH_MANGA_ID"))
end

function request()
  counter = counter + 1
  local body = string.format('{"manga_id": %d, "title": "Bench", "chapter": %d}',
                             manga, base + counter)
  return wrk.format("POST", "/notify/new-chapter", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.status,
    e.connect + e.read + e.write + e.timeout))
end
