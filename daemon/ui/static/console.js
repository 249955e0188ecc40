// The console's live parts: the element with data-live is refreshed from its JSON endpoint
// every few seconds (If-None-Match: a 304 when nothing changed). Pages work without it.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region || !window.fetch) {
    return;
  }
  var url = region.getAttribute("data-live");
  var etag = region.getAttribute("data-etag");
  var every = 2000;

  // Someone typing a reason in the live part: do not replace the form under them.
  function busy() {
    var fields = region.querySelectorAll("input[type=text], textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value || fields[i] === document.activeElement) {
        return true;
      }
    }
    return false;
  }

  function schedule() {
    window.setTimeout(poll, every);
  }

  function poll() {
    if (document.hidden || busy()) {
      schedule();
      return;
    }
    var headers = etag ? { "If-None-Match": etag } : {};
    fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          window.location.reload(); // the session ended: the page goes to the login form
          return null;
        }
        if (r.status !== 200) {
          return null;
        }
        etag = r.headers.get("ETag");
        return r.json();
      })
      .then(function (doc) {
        if (doc && typeof doc.html === "string") {
          region.innerHTML = doc.html;
          region.setAttribute("data-etag", etag || "");
        }
      })
      .catch(function () {})
      .then(schedule);
  }

  schedule();
})();
