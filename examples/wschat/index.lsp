<?lsp
-- The chat page: the HTML comes from here, the messages through chat.lsp.
local n = 0
for _ in pairs((page.members or {})) do n = n + 1 end
?><!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>remora chat</title>
<style>
  body { font: 15px sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #aaa; height: 20em; overflow-y: auto; padding: .5em; white-space: pre-wrap; }
  #status { color: #666; }
</style>
</head>
<body>
<h1>remora chat</h1>
<p>People in the chat now: <?lsp= n ?></p>
<p id="status">connecting&hellip;</p>
<div id="log"></div>
<form id="form"><input id="text" size="50" autocomplete="off" maxlength="2000" autofocus>
<button>Send</button></form>
<script src="chat.js"></script>
</body>
</html>
