<?lsp
-- A session: a table kept for this browser, found again by its cookie.
local s = request:session(true)
s.visits = (s.visits or 0) + 1
if request:data("forget") then s:terminate() end
response:include("_head.lsp")
?>
<h1>Session</h1>
<p>This browser has asked for this page <?lsp= s.visits ?> time(s) in its session,
which began <?lsp= os.time() - s:creationtime() ?> s ago and ends after
<?lsp= s:maxinactiveinterval() ?> s without a visit.
The server holds <?lsp= ba.session.count() ?> session(s).</p>
<p><a href="session.lsp">again</a> · <a href="session.lsp?forget=1">end the session</a></p>
</body></html>
