// Live rejection log: appends refusals as the server sends them (server-sent events).
// Values arrive already made visible by the server; they are set with textContent,
// never as HTML.
"use strict";
(function () {
  var status = document.getElementById("live-status");
  var table = document.getElementById("rejections");
  if (!status || !table || !window.EventSource) { return; }
  var body = table.tBodies[0];
  var source = new EventSource(status.getAttribute("data-stream"));
  var seen = 0;
  source.onopen = function () { status.textContent = "live: following new refusals (" + seen + " so far)"; };
  source.onerror = function () { status.textContent = "live: reconnecting…"; };
  source.onmessage = function (message) {
    var r = JSON.parse(message.data);
    var row = document.createElement("tr");
    row.className = "new";
    row.setAttribute("data-id", String(r.id));
    var first = document.createElement("td");
    var link = document.createElement("a");
    link.href = r.href;
    link.textContent = r.at;
    first.appendChild(link);
    row.appendChild(first);
    ["stage", "reason", "client", "from", "to", "subject"].forEach(function (key) {
      var cell = document.createElement("td");
      cell.textContent = r[key];
      if (key === "subject") { cell.className = "subject"; }
      row.appendChild(cell);
    });
    body.insertBefore(row, body.firstChild);
    seen += 1;
    status.textContent = "live: following new refusals (" + seen + " so far)";
  };
}());
