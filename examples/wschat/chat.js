// The chat client: one WebSocket to chat.lsp; what arrives is appended to
// the log. window.chat exposes the socket and the messages for the tests.
(function () {
  "use strict";
  var log = document.getElementById("log");
  var status = document.getElementById("status");
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
            location.pathname.replace(/[^/]*$/, "") + "chat.lsp";
  var ws = new WebSocket(url, ["chat"]);
  var chat = window.chat = { ws: ws, messages: [], open: false };

  function show(text) {
    chat.messages.push(text);
    var line = document.createElement("div");
    line.textContent = text;   // never HTML from the network
    log.appendChild(line);
    log.scrollTop = log.scrollHeight;
  }

  ws.onopen = function () {
    chat.open = true;
    status.textContent = "connected (" + (ws.extensions || "no extensions") + ")";
  };
  ws.onmessage = function (ev) { show(ev.data); };
  ws.onclose = function (ev) {
    chat.open = false;
    status.textContent = "closed (" + ev.code + ")";
  };
  document.getElementById("form").onsubmit = function (ev) {
    ev.preventDefault();
    var input = document.getElementById("text");
    if (input.value && chat.open) ws.send(input.value);
    input.value = "";
  };
})();
