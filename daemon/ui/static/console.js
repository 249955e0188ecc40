// The console's live parts: the element with data-live is refreshed from its JSON endpoint
// every few seconds (If-None-Match: a 304 when nothing changed): an incident's or the
// overview's live part, or a whole page's main part. Pages work without it.
// When the daemon stops answering, a banner says since when the page is stale.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region || !window.fetch) {
    return;
  }
  var url = region.getAttribute("data-live");
  var etag = region.getAttribute("data-etag");
  var every = 2000;

  var banner = null;
  var known = new Date(); // when the page last heard from the daemon

  // Someone filling a form in the live part: do not replace it under them. A field still
  // holding what it was served with (a silence's "1h", a rule picked by default) is not.
  function changed(field) {
    if (field.type === "hidden") {
      return false;
    }
    if (field.type === "checkbox" || field.type === "radio") {
      return field.checked !== field.defaultChecked;
    }
    if (field.options) {
      for (var i = 0; i < field.options.length; i++) {
        if (field.options[i].selected !== field.options[i].defaultSelected) {
          return true;
        }
      }
      return false;
    }
    return field.value !== field.defaultValue;
  }

  function busy() {
    if (region.contains(document.activeElement) && document.activeElement.form) {
      return true;
    }
    var fields = region.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      if (changed(fields[i])) {
        return true;
      }
    }
    return false;
  }

  function stale() {
    if (banner) {
      return;
    }
    banner = document.createElement("p");
    banner.className = "flash bad stale";
    banner.setAttribute("role", "alert");
    banner.textContent =
      "runbookd is not answering: this page shows what it knew at " +
      known.toISOString().slice(11, 19) + " UTC.";
    region.parentNode.insertBefore(banner, region);
  }

  function fresh() {
    known = new Date();
    if (banner) {
      banner.parentNode.removeChild(banner);
      banner = null;
    }
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
        if (r.status === 304) {
          fresh();
          return null;
        }
        if (r.status !== 200) {
          stale();
          return null;
        }
        fresh();
        etag = r.headers.get("ETag");
        return r.json();
      })
      .then(function (doc) {
        if (doc && typeof doc.html === "string") {
          region.innerHTML = doc.html;
          region.setAttribute("data-etag", etag || "");
        }
      })
      .catch(stale)
      .then(schedule);
  }

  schedule();
})();
