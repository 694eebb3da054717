<?lsp response:include("_head.lsp") ?>
<h1>Streaming</h1>
<?lsp for i = 1, 5 do ?><p>line <?lsp= i ?> at <?lsp= ba.clock() ?> ms</p>
<?lsp response:flush() ba.sleep(100) end ?>
<p>done: each flush sent a chunk; ba.sleep suspended only this page.</p>
</body></html>
