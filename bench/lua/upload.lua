-- wrk script: send the file named by BENCH_BODY as the body of every request,
-- with the method in BENCH_METHOD (POST or PUT), and print a JSON summary.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = os.getenv("BENCH_METHOD") or "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("BENCH_TYPE") or "image/jpeg"

done = dofile(os.getenv("BENCH_LUA_DIR") .. "/summary.lua")
