-- wrk script: POSTs the report template with a fresh incident id per request, so
-- every request stores a new crash (no duplicate short-cut). The ids hold the start
-- second of the run: a second run against the same server (benches/triage.sh's rounds)
-- would otherwise send the first run's ids again and time the dedup answer instead.
local template = io.open(os.getenv("REPORT")):read("*a")
local token = os.getenv("TOKEN")
local threads = {}
local counter = 0
local started = os.time()

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function request()
  counter = counter + 1
  local id = string.format("%08X-%04X-4%03X-8000-%012X", tid,
    math.floor(started / 4096) % 65536, started % 4096, counter)
  local body = template:gsub("INCIDENT_PLACEHOLDER", id)
  return wrk.format("POST", "/api/v1/crashes", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/octet-stream",
  }, body)
end
