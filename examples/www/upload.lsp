<?lsp response:include("_head.lsp") local esc = app.util.escape ?>
<h1>Upload</h1>
<form method="post" enctype="multipart/form-data"><input type="file" name="file">
<input name="note" value="a note"> <button>Upload</button></form>
<?lsp for _, p in ipairs(request:multipart()) do ?>
<p>part <b><?lsp= esc(p.name) ?></b>: <?lsp= p.filename and ("file " .. esc(p.filename)) or "field" ?>,
<?lsp= #p.data ?> bytes</p><?lsp end ?>
</body></html>
