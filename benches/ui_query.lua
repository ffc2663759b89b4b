-- wrk script for benches/ui.sh: GETs the paths listed in $PATHS (one per line) in turn,
-- signed in with the session cookie in $COOKIE.
local cookie = os.getenv("COOKIE")
local paths = {}
for line in io.lines(os.getenv("PATHS")) do
  if #line > 0 then table.insert(paths, line) end
end
local i = 0

function request()
  i = i + 1
  return wrk.format("GET", paths[(i - 1) % #paths + 1], { ["Cookie"] = cookie })
end
