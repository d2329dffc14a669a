// Steadfast console: live updates of the page's main section from one server-sent event stream per page.
// No polling: the server holds one watch (as the viewer) and sends "change" when something shown changed.
"use strict";
(function () {
  var main = document.getElementById("main");
  var canonical = document.body.getAttribute("data-canonical");
  if (canonical && window.location.pathname !== canonical) {
    // After a decision was posted: the address bar shows the page itself again.
    window.history.replaceState(null, "", canonical);
  }
  var live = document.body.getAttribute("data-live");
  if (!main || !live || !window.EventSource) {
    return;
  }
  var timer = null;

  function busy() {
    // Leave the page alone while the viewer is writing a reason or has focus in a form.
    var active = document.activeElement;
    if (active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
      return true;
    }
    var fields = main.querySelectorAll("input[type=text], input:not([type]), textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value && fields[i].name === "reason") {
        return true;
      }
    }
    return false;
  }

  function refresh() {
    timer = null;
    if (busy()) {
      timer = setTimeout(refresh, 2000);
      return;
    }
    fetch(window.location.href, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        if (text === null) {
          return;
        }
        main.innerHTML = text;
        main.setAttribute("data-updated", String(Date.now()));
        var region = document.getElementById("live-region");
        if (region) {
          region.textContent = "Updated " + new Date().toLocaleTimeString();
        }
      })
      .catch(function () {});
  }

  var stream = new EventSource(live);
  stream.addEventListener("open", function () {
    document.body.setAttribute("data-live-state", "open");
  });
  stream.addEventListener("change", function () {
    if (timer === null) {
      timer = setTimeout(refresh, 250);
    }
  });
  window.addEventListener("pagehide", function () {
    stream.close();
  });
})();
