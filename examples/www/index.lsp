<?lsp response:include("_head.lsp") local esc = app.util.escape ?>
<h1>remora demo</h1>
<p>This site is a directory app: static files, Lua Server Pages, a <code>.preload</code>
script and <code>.lua/</code> modules. Up <?lsp= app.util.uptime(app.started) ?>;
the preload timer ticked <?lsp= app.ticks ?> times.</p>
<ul>
<li><a href="hello.lsp">hello.lsp</a>: the request object</li>
<li><a href="form.lsp">form.lsp</a>: a form, GET and POST</li>
<li><a href="upload.lsp">upload.lsp</a>: a multipart file upload</li>
<li><a href="put.lsp">put.lsp</a>: an upload of any size, streamed with <code>request:rawrdr()</code></li>
<li><a href="session.lsp">session.lsp</a>: a session kept by a cookie (<code>request:session()</code>)</li>
<li><a href="api.lsp">api.lsp</a>: a JSON answer</li>
<li><a href="client.lsp">client.lsp</a>: a page that is an HTTP client (<code>require "httpc"</code>), suspending only itself</li>
<li><a href="stream.lsp">stream.lsp</a>: chunked output with <code>response:flush()</code> and <code>ba.sleep</code></li>
<li><a href="time.lsp">time.lsp</a>: a page that is a client of a local RFC 868 time service, with a blocking-style read</li>
<li><a href="ws.lsp">ws.lsp</a>: a WebSocket echo through <code>ba.socket.req2sock</code></li>
<li><a href="error.lsp">error.lsp</a>: a page error (500; the traceback is in the log, and in the page with <code>--dev</code>)</li>
<li><a href="files/">files/</a>: static files (ETag, ranges, gzip)</li>
<li>the screen-share app runs beside this site (port 8081 with <code>make run</code>): open the URL with the token that the console printed</li>
</ul>
</body></html>
