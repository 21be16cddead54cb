-- POST JSON bodies in turn, for wrk (used by benchmarks/gateway.py):
--
--   wrk -s benchmarks/wrk/post.lua URL -- BODIES_FILE ["Header: value" ...]
--
-- BODIES_FILE holds one JSON body per line. Every request is formatted once in init, so the
-- load generator spends its CPU on sockets, not on Lua. done() prints one line starting with
-- "wrk-json " that the benchmark reads instead of wrk's rounded text.

local requests = {}
local next_index = 0
local threads = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk -s post.lua URL -- BODIES_FILE [\"Header: value\" ...]")
  end
  local headers = { ["Content-Type"] = "application/json" }
  for i = 2, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    if name == nil then
      error("not a header: " .. args[i])
    end
    headers[name] = value
  end
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #requests == 0 then
    error("no bodies in " .. path)
  end
  -- Threads start at different bodies, so they do not send the same sequence.
  next_index = (thread_number * 97) % #requests
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    "wrk-json {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, \"connect\": %d, "
      .. "\"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d, \"mean_us\": %.1f, "
      .. "\"max_us\": %.0f, \"p50_us\": %.0f, \"p90_us\": %.0f, \"p99_us\": %.0f, "
      .. "\"p999_us\": %.0f}\n",
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)
  ))
end
