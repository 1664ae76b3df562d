-- wrk script for qapp's benchmarks.
--
-- Arguments after "--": METHOD [BODY]. Headers come from wrk's own -H flags.
-- Each thread counts answers by status code; done() prints one line,
-- "BENCH_JSON {...}", that bench/wrk.py parses. Latencies are microseconds.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   wrk.method = args[1] or "GET"
   if args[2] and args[2] ~= "" then
      wrk.body = args[2]
   end
   statuses = {}
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

local function object(map)
   local parts = {}
   for key, value in pairs(map) do
      table.insert(parts, string.format('"%s":%d', key, value))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local statuses = {}
   for _, thread in ipairs(threads) do
      for code, count in pairs(thread:get("statuses") or {}) do
         statuses[code] = (statuses[code] or 0) + count
      end
   end
   local e = summary.errors
   io.write("BENCH_JSON ", string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"statuses":%s}',
      summary.requests, summary.duration, summary.bytes,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout,
      object(statuses)), "\n")
end
