<?lsp response:include("_head.lsp") ?>
<p>This line is never sent: the error below makes the answer a 500.</p>
<?lsp local t = nil; print(t.field) ?>
