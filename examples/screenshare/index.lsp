<?lsp
-- The viewer page. Without a valid token (or the login cookie) it shows no
-- screen, only how to get in.
response:setheader("Cache-Control", "no-store")
response:setheader("Referrer-Policy", "no-referrer")   -- the token is in the URL
local role = app.access:role(request)
?><!DOCTYPE html>
<html><head><meta charset="utf-8"><title>remora screen share</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
  html, body { margin: 0; height: 100%; background: #202124; color: #e8eaed; font: 13px sans-serif; }
  #screen { display: block; margin: 0 auto; outline: none; image-rendering: auto; cursor: default; }
  #status { height: 24px; line-height: 24px; padding: 0 8px; font-family: monospace; white-space: pre; }
  main { padding: 2em; max-width: 40em; }
</style></head>
<body>
<?lsp if role then ?>
<div id="status">connecting...</div>
<canvas id="screen" tabindex="0" width="1" height="1"></canvas>
<script src="static/viewer.js"></script>
<script>
  var token = new URLSearchParams(location.search).get("token") || "";
  var url = new URL("ws.lsp", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = token ? "?token=" + encodeURIComponent(token) : "";
  window.viewer = RemoraScreen.start({url: url.href, canvas: document.getElementById("screen"),
    status: document.getElementById("status"), viewOnly: <?lsp= role == "view" and "true" or "false" ?>});
</script>
<?lsp else ?>
<main>
<h1>Screen share</h1>
<p>This screen is shared only with those who have its link: open the address
the server printed when it started (it ends with <code>?token=...</code>).</p>
<?lsp if app.access.password then ?>
<form method="post" action="login.lsp">
  <label>Password <input type="password" name="password" autofocus></label>
  <button>Enter</button>
</form>
<?lsp end ?>
</main>
<?lsp end ?>
</body></html>
