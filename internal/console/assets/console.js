// Live updates: the server pushes the page's live section every interval
// as server-sent events; the filter box reconnects with the new query.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var conn = document.getElementById("conn");
  var form = document.getElementById("filter");
  if (!live || !window.EventSource) return;
  var es = null, timer = null;
  function open() {
    if (es) es.close();
    es = new EventSource("/v1/console/events" + location.search);
    es.addEventListener("live", function (e) {
      live.innerHTML = e.data;
      conn.textContent = "live";
      conn.className = "conn live";
    });
    es.onerror = function () {
      conn.textContent = "reconnecting…";
      conn.className = "conn lost";
    };
  }
  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var p = new URLSearchParams(new FormData(form));
      if (!p.get("q")) p.delete("q");
      var s = p.toString();
      history.replaceState(null, "", s ? "?" + s : location.pathname);
      open();
    }, 250);
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  open();
})();
