-- wrk script for benches/triage.sh and benches/ui.sh: GETs the paths listed in $PATHS
-- (one per line, each a path with its query), in turn, with the bearer token in $TOKEN
-- (the API) or the session cookie in $COOKIE (the web UI).
local token = os.getenv("TOKEN")
local cookie = os.getenv("COOKIE")
local paths = {}
for line in io.lines(os.getenv("PATHS")) do
  if #line > 0 then table.insert(paths, line) end
end
local headers = {}
if cookie then
  headers["Cookie"] = cookie
else
  headers["Authorization"] = "Bearer " .. token
end
local i = 0

function request()
  i = i + 1
  return wrk.format("GET", paths[(i - 1) % #paths + 1], headers)
end
