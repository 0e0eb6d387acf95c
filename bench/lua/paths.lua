-- wrk script: GET each path of the file named by BENCH_PATHS in turn, then print
-- a JSON summary. Each connection starts at its own place in the list.
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  paths[#paths + 1] = line
end
local counter = 0

function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end

local i = 0
function request()
  i = i + 1
  return wrk.format("GET", paths[((i + (offset or 0)) % #paths) + 1])
end

done = dofile(os.getenv("BENCH_LUA_DIR") .. "/summary.lua")
