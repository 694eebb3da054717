<?lsp response:include("_head.lsp") local esc = app.util.escape ?>
<h1>Hello from <?lsp= request:uri() ?></h1>
<table>
<tr><td>method</td><td><?lsp= request:method() ?></td></tr>
<tr><td>url</td><td><?lsp= esc(request:url()) ?></td></tr>
<tr><td>HTTP version</td><td><?lsp= request:version() ?></td></tr>
<tr><td>peer</td><td><?lsp= (request:peername()) ?></td></tr>
<tr><td>secure</td><td><?lsp= request:issecure() ?></td></tr>
<tr><td>visits of this page</td><td><?lsp page.visits = (page.visits or 0) + 1 ?><?lsp= page.visits ?></td></tr>
</table>
<h2>Request headers</h2>
<table><?lsp for k, v in pairs(request:header()) do ?>
<tr><td><?lsp= esc(k) ?></td><td><?lsp= esc(v) ?></td></tr><?lsp end ?>
</table>
</body></html>
