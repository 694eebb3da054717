<?lsp response:include("_head.lsp") local esc = app.util.escape local d = request:data() ?>
<h1>A form</h1>
<form method="post"><input name="name" value="<?lsp= esc(d.name or '') ?>">
<input name="color" value="<?lsp= esc(d.color or 'blue') ?>"> <button>POST</button></form>
<?lsp if d.name then ?><p>Hello <b><?lsp= esc(d.name) ?></b>, you like <?lsp= esc(d.color) ?>
(sent with <?lsp= request:method() ?>).</p><?lsp end ?>
</body></html>
