-- wrk script for benches/triage.sh: GETs the paths listed in $PATHS (one per line,
-- each a path with its query), in turn, with the read token in $TOKEN.
local token = os.getenv("TOKEN")
local paths = {}
for line in io.lines(os.getenv("PATHS")) do
  if #line > 0 then table.insert(paths, line) end
end
local i = 0

function request()
  i = i + 1
  return wrk.format("GET", paths[(i - 1) % #paths + 1], {
    ["Authorization"] = "Bearer " .. token,
  })
end
