<?lsp response:include("_head.lsp") local esc = app.util.escape
local httpc = require "httpc"
local h = httpc.create()
local _, port = request:sockname()
local ok, err = h:request{ url = "http://127.0.0.1:" .. port .. "/api.lsp?from=client", timeout = 5000 }
?>
<h1>This page fetched /api.lsp with httpc</h1>
<?lsp if ok then ?><p>status <?lsp= h:status() ?>, <?lsp= esc(h:header()["content-type"]) ?></p>
<pre><?lsp= esc(h:read("a")) ?></pre><?lsp else ?><p>failed: <?lsp= esc(err) ?></p><?lsp end ?>
</body></html>
