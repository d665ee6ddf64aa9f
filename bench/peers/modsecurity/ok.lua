-- The backend of the benchmark: 200 "ok" for any request (bench/peers/modsecurity).
function handle(r)
    r.content_type = "text/plain"
    r:puts("ok\n")
    return apache2.OK
end
