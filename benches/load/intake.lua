-- wrk script: POSTs the report template with a fresh incident id per request, so
-- every request stores a new crash (no duplicate short-cut).
local template = io.open(os.getenv("REPORT")):read("*a")
local token = os.getenv("TOKEN")
local threads = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function request()
  counter = counter + 1
  local id = string.format("%08X-0000-4000-8000-%012X", tid, counter)
  local body = template:gsub("INCIDENT_PLACEHOLDER", id)
  return wrk.format("POST", "/api/v1/crashes", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/octet-stream",
  }, body)
end
