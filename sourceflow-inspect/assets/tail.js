// The live tail: follows /tail/events (server-sent events) and adds each recorded event to the
// list, newest first. Everything from the server is set as text, never parsed as markup.
(function () {
  "use strict";
  var list = document.getElementById("tail");
  var status = document.getElementById("tail-status");
  var toggle = document.getElementById("tail-toggle");
  if (!list) { return; }
  var after = list.getAttribute("data-after") || "0";
  var source = null;
  var KEEP = 500;

  function link(href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function add(event) {
    var e = JSON.parse(event.data);
    after = String(e.position);
    var li = document.createElement("li");
    li.className = "tail-event";
    li.setAttribute("data-position", after);
    li.appendChild(span("num", String(e.position)));
    li.appendChild(span("name", e.name));
    var stream = list.getAttribute("data-stream") + "?type=" + encodeURIComponent(e.type) +
      "&id=" + encodeURIComponent(e.id);
    li.appendChild(link(stream, e.type + "/" + e.id + " #" + e.sequence));
    li.appendChild(span("time", e.time));
    var trace = list.getAttribute("data-trace") + "?correlation=" + encodeURIComponent(e.correlation);
    // UUID v7 ids share their leading time digits: the random tail tells them apart.
    li.appendChild(link(trace, "…" + e.correlation.slice(-12)));
    list.insertBefore(li, list.firstChild);
    while (list.children.length > KEEP) { list.removeChild(list.lastChild); }
  }

  var until = list.getAttribute("data-until");

  function start() {
    var url = list.getAttribute("data-events") + "?after=" + encodeURIComponent(after);
    if (until) { url += "&until=" + encodeURIComponent(until); }
    source = new EventSource(url);
    source.addEventListener("open", function () { status.textContent = "following"; });
    source.addEventListener("recorded", add);
    source.addEventListener("end", function (event) {
      source.close();
      source = null;
      status.textContent = "ended at position " + event.data;
      toggle.hidden = true;
    });
    source.addEventListener("error", function () { status.textContent = "reconnecting…"; });
    toggle.textContent = "Pause";
  }

  function stop() {
    if (source) { source.close(); source = null; }
    status.textContent = "paused";
    toggle.textContent = "Resume";
  }

  toggle.addEventListener("click", function () { if (source) { stop(); } else { start(); } });
  start();
}());
