-- wrk script: send `depth` pipelined requests per write (default 16), built once with wrk.format.
--   wrk -t1 -c64 -d5s -s pipeline.lua http://127.0.0.1:8080/ -- 16
-- wrk counts every response, so Requests/sec counts each pipelined request.

local batch

init = function(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format(nil)
  end
  batch = table.concat(requests)
end

request = function()
  return batch
end
