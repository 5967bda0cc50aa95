-- wrk script for the proxy benchmark: one fixed request, built once per thread from the
-- arguments after "--": the request-target (absolute-form through a proxy, origin-form
-- direct), then "Name: value" header lines. done() prints one machine-readable line.
local request_text

function init(args)
  local lines = { "GET " .. args[1] .. " HTTP/1.1" }
  for i = 2, #args do
    lines[#lines + 1] = args[i]
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = ""
  request_text = table.concat(lines, "\r\n")
end

function request()
  return request_text
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"durationUs\":%d,\"bytes\":%d,\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d," ..
    "\"p50Us\":%d,\"p99Us\":%d,\"meanUs\":%.1f,\"maxUs\":%d}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
