/* Small page behaviours: tell the user when an in-place (htmx) request fails instead of doing nothing. */
(function () {
  "use strict";
  function say(text) {
    var box = document.getElementById("htmx-alert");
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (status === 403) say("You are not allowed to do that.");
    else if (status === 404) say("That record no longer exists or is not yours to see. Reload the page.");
    else if (status === 503) say("That service is not available right now.");
    else say("Something went wrong (" + status + "). Reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    say("The server cannot be reached. Check your connection and try again.");
  });
  document.addEventListener("htmx:beforeRequest", function () {
    var box = document.getElementById("htmx-alert");
    if (box) box.hidden = true;
  });
})();

/* "/" focuses the global search box (unless typing in a field); Escape closes its suggestions. */
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    var box = document.getElementById("global-search");
    if (!box) return;
    var target = event.target;
    var typing = target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      box.focus();
      box.select();
    } else if (event.key === "Escape" && target === box) {
      var list = document.getElementById("search-suggest");
      if (list) list.innerHTML = "";
    }
  });
})();
