<?lsp
-- PUT: the body streams through rawrdr() piece by piece, so a file of any
-- size (up to --max-upload) costs the memory of one piece.
if request:method() == "PUT" then
  local bytes, pieces, t0 = 0, 0, ba.clock()
  for piece in request:rawrdr() do bytes, pieces = bytes + #piece, pieces + 1 end
  response:json({bytes = bytes, pieces = pieces, ms = ba.clock() - t0})
end
response:include("_head.lsp")
?>
<h1>Streamed upload</h1>
<p>Pick a file of any size: it is sent with <code>PUT</code> and counted as it arrives,
never held whole in memory.</p>
<input type="file" id="f"> <span id="out"></span>
<script>
document.getElementById("f").onchange = async (e) => {
  const out = document.getElementById("out");
  out.textContent = "sending...";
  const r = await fetch("put.lsp", {method: "PUT", body: e.target.files[0]});
  const j = await r.json();
  out.textContent = j.bytes + " bytes in " + j.pieces + " pieces, " + j.ms + " ms";
};
</script>
</body></html>
