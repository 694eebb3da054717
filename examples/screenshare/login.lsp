<?lsp
-- Trades the configured password for the login cookie, then back to the page.
if request:method() == "POST" and app.access:login(request, request:data("password")) then
  response:setstatus(303)   -- by hand: sendredirect would drop the cookie header
  response:setheader("Location", "./")
else
  response:setstatus(403)
  print("<!DOCTYPE html><p>Wrong password. <a href=\"./\">Back</a></p>")
end
?>
