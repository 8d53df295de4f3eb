// medloom serve: keyboard navigation on the grid, ROI and proposal toggles and window/level on a record page.
// Texts from data are never written as HTML here: the page comes escaped from the server.
(function () {
  "use strict";
  var tiles = Array.prototype.slice.call(document.querySelectorAll("#tiles .tile"));
  if (tiles.length) {
    var at = 0;
    var focus = function (i) { at = Math.max(0, Math.min(tiles.length - 1, i)); tiles[at].focus(); };
    var perRow = function () {
      var top = tiles[0].offsetTop, n = 0;
      while (n < tiles.length && tiles[n].offsetTop === top) { n++; }
      return Math.max(1, n);
    };
    tiles.forEach(function (t, i) { t.addEventListener("focus", function () { at = i; }); });
    document.addEventListener("keydown", function (e) {
      var tag = (e.target && e.target.tagName) || "";
      if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") { return; }
      if (e.key === "ArrowRight") { focus(at + 1); e.preventDefault(); }
      else if (e.key === "ArrowLeft") { focus(at - 1); e.preventDefault(); }
      else if (e.key === "ArrowDown") { focus(at + perRow()); e.preventDefault(); }
      else if (e.key === "ArrowUp") { focus(at - perRow()); e.preventDefault(); }
      else if (e.key === "n") { var n = document.getElementById("next-page"); if (n) { window.location = n.href; } }
      else if (e.key === "p") { var p = document.getElementById("prev-page"); if (p) { window.location = p.href; } }
    });
    if (document.activeElement === document.body) { focus(0); }
  }
  document.querySelectorAll(".roi-toggle").forEach(function (box) {
    box.addEventListener("change", function () {
      document.querySelectorAll("#overlay g.roi").forEach(function (g) {
        if (g.getAttribute("data-label") === box.getAttribute("data-label")) {
          g.style.display = box.checked ? "" : "none";
        }
      });
    });
  });
  // machine proposals (medloom propose): accepted and not accepted shown or hidden apart from the dataset's ROIs
  document.querySelectorAll(".proposal-toggle").forEach(function (box) {
    box.addEventListener("change", function () {
      document.querySelectorAll("#overlay g.proposal." + box.getAttribute("data-state")).forEach(function (g) {
        g.style.display = box.checked ? "" : "none";
      });
    });
  });
  var form = document.getElementById("window-form");
  if (form) {
    var img = document.getElementById("record-image");
    var apply = function (wc, ww) {
      var url = new URL(img.getAttribute("data-src"), window.location.href);
      url.searchParams.set("wc", wc);
      url.searchParams.set("ww", ww);
      img.src = url.pathname + url.search;
    };
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      apply(document.getElementById("wc").value, document.getElementById("ww").value);
    });
    document.getElementById("window-reset").addEventListener("click", function (e) {
      var b = e.target;
      document.getElementById("wc").value = b.getAttribute("data-wc");
      document.getElementById("ww").value = b.getAttribute("data-ww");
      img.src = img.getAttribute("data-src");
    });
  }
  // the curator's name, typed once: kept in this browser and filled into every form that asks for it
  ["annotator", "curator", "reviewer"].forEach(function (field) {
    document.querySelectorAll("input[name='" + field + "']").forEach(function (input) {
      var saved = window.localStorage.getItem("medloom." + field);
      if (saved && !input.value) { input.value = saved; }
      input.addEventListener("change", function () { window.localStorage.setItem("medloom." + field, input.value); });
    });
  });
  var global = document.getElementById("global");
  if (global) {
    var show = function () {
      document.querySelectorAll(".locals").forEach(function (d) {
        d.style.display = d.getAttribute("data-global") === global.value ? "" : "none";
      });
    };
    global.addEventListener("change", show);
    show();
  }
})();
