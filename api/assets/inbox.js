// Kairo's inbox: live updates, posting without a reload, the template
// preview, keyboard shortcuts and notifications. The pages work without
// this script; it only saves reloads.
(function () {
  "use strict";
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : "";
  var main = document.getElementById("main");
  var baseTitle = document.title;
  var unseenMine = 0;

  function signedOut() {
    if (leaving) { return; }
    window.location.href = "/signin?expired=1&next=" + encodeURIComponent(location.pathname + location.search);
  }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) { el.textContent = at.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }); }
    });
  }

  function countdowns() {
    document.querySelectorAll("[data-closes-at]").forEach(function (el) {
      var left = new Date(el.getAttribute("data-closes-at")) - new Date();
      var out = el.querySelector(".countdown");
      if (!out) { return; }
      if (left <= 0) { el.classList.remove("open"); el.textContent = "The 24-hour window has just closed: only approved templates can be sent."; return; }
      var minutes = Math.floor(left / 60000);
      out.textContent = Math.floor(minutes / 60) + "h " + String(minutes % 60).padStart(2, "0") + "m";
    });
  }

  function get(url) {
    return fetch(url, { headers: { "X-Kairo-Fetch": "1" }, credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { signedOut(); throw new Error("signed out"); }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    });
  }

  function currentThread() { return main ? main.getAttribute("data-thread") : null; }
  function filters() { return main ? (main.getAttribute("data-filters") || "") : ""; }

  // The composer keeps what the agent typed across a refresh.
  function saveComposer() {
    var saved = {};
    document.querySelectorAll("#composer input, #composer textarea, #composer select").forEach(function (el) {
      if (el.id && el.type !== "hidden") { saved[el.id] = el.value; }
    });
    var active = document.activeElement;
    return { values: saved, focus: active && active.id ? active.id : null,
      details: Array.prototype.map.call(document.querySelectorAll("#composer details"), function (d) { return d.open; }) };
  }

  function restoreComposer(saved) {
    Object.keys(saved.values).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.value = saved.values[id]; }
    });
    document.querySelectorAll("#composer details").forEach(function (d, i) {
      if (saved.details[i] !== undefined) { d.open = saved.details[i]; }
    });
    var select = document.getElementById("template");
    if (select) { showTemplate(select); }
    if (saved.focus) { var el = document.getElementById(saved.focus); if (el) { el.focus(); } }
  }

  // What the agent changed in a part being replaced (a choice in the
  // assign menu, a contact field being edited, an opened fold) is carried
  // into its fresh copy, with the focus.
  function carry(old, fresh) {
    old.querySelectorAll("input[id], textarea[id], select[id]").forEach(function (el) {
      var next = fresh.querySelector("#" + CSS.escape(el.id));
      if (!next || el.type === "hidden") { return; }
      var changed = el.tagName === "SELECT"
        ? el.selectedIndex >= 0 && !el.options[el.selectedIndex].defaultSelected
        : el.value !== el.defaultValue;
      if (changed) { next.value = el.value; }
    });
    var folds = fresh.querySelectorAll("details");
    old.querySelectorAll("details").forEach(function (d, i) { if (folds[i]) { folds[i].open = d.open; } });
    var active = document.activeElement;
    return active && active.id && old.contains(active) ? active.id : null;
  }

  function refocus(id) {
    if (id) { var el = document.getElementById(id); if (el) { el.focus(); } }
  }

  // A refresh replaces the header, the messages and the panel; the
  // composer stays (with what is typed and any error shown) unless its mode
  // changed (the window opened or closed, the consent changed).
  function refreshConversation() {
    var id = currentThread();
    if (!id) { return Promise.resolve(); }
    return get("/inbox/" + id + "/conversation").then(function (html) {
      var box = document.createElement("div");
      box.innerHTML = html;
      var fresh = box.querySelector("#conversation");
      var old = document.getElementById("conversation");
      if (fresh && old && old.querySelector("#composer")) {
        ["header.thread-head", "ol.messages"].forEach(function (part) {
          var next = fresh.querySelector(part);
          var before = old.querySelector(part);
          if (next && before) {
            var focus = carry(before, next);
            before.replaceWith(next);
            wire(next);
            refocus(focus);
          }
        });
        old.setAttribute("data-owner", fresh.getAttribute("data-owner") || "");
        var nextComposer = fresh.querySelector("#composer");
        var oldComposer = old.querySelector("#composer");
        if (nextComposer && oldComposer && nextComposer.getAttribute("data-mode") !== oldComposer.getAttribute("data-mode")) {
          var saved = saveComposer();
          oldComposer.replaceWith(nextComposer);
          restoreComposer(saved);
          wire(nextComposer);
        }
      } else if (fresh && old) {
        old.replaceWith(fresh);
        wire(fresh);
      }
      var panel = box.querySelector("#panel");
      var oldPanel = document.getElementById("panel");
      // The agent editing the contact keeps the form as it is: the panel
      // is refreshed once the edit is saved or folded away.
      var editing = oldPanel && (oldPanel.querySelector("details.edit-contact[open]") || oldPanel.contains(document.activeElement));
      if (panel && oldPanel && !editing) {
        var focus = carry(oldPanel, panel);
        oldPanel.replaceWith(panel);
        wire(panel);
        refocus(focus);
      }
      else if (panel && main) { main.appendChild(panel); wire(panel); }
      scrollToEnd();
    });
  }

  function mineIds() {
    return Array.prototype.map.call(document.querySelectorAll("#threads li[data-mine]"), function (li) { return li.getAttribute("data-id"); });
  }

  // Pages of the list shown: a refresh reads as many as the agent has
  // scrolled through, so the list does not jump back to its first page.
  var pagesShown = 1;

  function refreshList() {
    var list = document.getElementById("threads");
    if (!list) { return Promise.resolve(); }
    var before = mineIds();
    var selected = list.querySelector("li.selected");
    var selectedId = selected ? selected.getAttribute("data-id") : null;
    var q = filters();
    var paging = pagesShown > 1 ? "pages=" + pagesShown : "";
    var query = [q, paging].filter(Boolean).join("&");
    return get("/inbox/threads" + (query ? "?" + query : "")).then(function (html) {
      list.innerHTML = html;
      markCurrent(list, selectedId);
      localTimes(list);
      watchMore();
      var fresh = mineIds().filter(function (x) { return before.indexOf(x) < 0; });
      if (fresh.length) { notifyMine(fresh.length); }
    });
  }

  // The open conversation is being read: it is not unread in the list.
  function markCurrent(root, selectedId) {
    var id = currentThread();
    root.querySelectorAll("li.thread").forEach(function (li) {
      if (li.getAttribute("data-id") === id) {
        li.classList.add("current");
        li.classList.remove("unread");
        var badge = li.querySelector(".badge.unread");
        if (badge) { badge.remove(); }
      }
      if (selectedId && li.getAttribute("data-id") === selectedId) { li.classList.add("selected"); }
    });
  }

  // Older conversations load as the list scrolls to its end (the link
  // stays for keyboards and pages without this script).
  var moreObserver = null;
  function loadMore(link) {
    if (link.getAttribute("data-loading")) { return; }
    link.setAttribute("data-loading", "1");
    var query = link.getAttribute("href").split("?")[1] || "";
    get("/inbox/threads?" + query).then(function (html) {
      var box = document.createElement("div");
      box.innerHTML = html;
      var list = document.querySelector("#threads ul.threads");
      var known = {};
      list.querySelectorAll("li.thread").forEach(function (li) { known[li.getAttribute("data-id")] = true; });
      box.querySelectorAll("li.thread").forEach(function (li) {
        if (!known[li.getAttribute("data-id")]) { list.appendChild(li); }
      });
      markCurrent(list, null);
      localTimes(list);
      var next = box.querySelector("a.more");
      if (next) { link.replaceWith(next); } else { link.remove(); }
      pagesShown += 1;
      watchMore();
    }).catch(function () { link.removeAttribute("data-loading"); });
  }
  function watchMore() {
    var link = document.querySelector("#threads a.more[data-more]");
    if (!link) { return; }
    link.addEventListener("click", function (e) { e.preventDefault(); loadMore(link); });
    if (!("IntersectionObserver" in window)) { return; }
    if (moreObserver) { moreObserver.disconnect(); }
    moreObserver = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) { if (entry.isIntersecting) { loadMore(entry.target); } });
    });
    moreObserver.observe(link);
  }

  function notifyMine(count) {
    if (document.hidden || !document.hasFocus()) {
      unseenMine += count;
      document.title = "(" + unseenMine + ") " + baseTitle;
    }
    if ("Notification" in window && Notification.permission === "granted") {
      new Notification("Kairo", { body: count === 1 ? "A conversation was assigned to you" : count + " conversations were assigned to you" });
    }
  }

  window.addEventListener("focus", function () { unseenMine = 0; document.title = baseTitle; });
  document.addEventListener("click", function askOnce() {
    if ("Notification" in window && Notification.permission === "default") { Notification.requestPermission(); }
    document.removeEventListener("click", askOnce);
  });

  function showError(form, message) {
    var box = form.closest("#composer") || form.parentElement;
    var el = box.querySelector(".error[data-posted]");
    if (!el) {
      el = document.createElement("p");
      el.className = "error";
      el.setAttribute("role", "alert");
      el.setAttribute("data-posted", "");
      el.id = "composer-error";
      box.insertBefore(el, box.firstChild);
    }
    el.textContent = message;
  }

  function post(form) {
    var body = new URLSearchParams(new FormData(form));
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    return fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-Kairo-Fetch": "1", "X-CSRF-Token": csrf },
    }).then(function (r) {
      if (r.status === 401) { signedOut(); return; }
      if (r.ok) {
        if (form.hasAttribute("data-reply")) { form.reset(); }
        if (form.hasAttribute("data-template-form")) { form.querySelectorAll("input:not([type=hidden])").forEach(function (i) { i.value = ""; }); }
        if (form.hasAttribute("data-contact")) {
          form.reset();
          var fold = form.closest("details");
          if (fold) { fold.open = false; }
        }
        var stale = document.querySelectorAll("#composer .error[data-posted]");
        stale.forEach(function (e) { e.remove(); });
        return Promise.all([refreshConversation(), refreshList()]);
      }
      return r.text().then(function (text) { showError(form, text || ("The request failed (HTTP " + r.status + ").")); });
    }).catch(function () {
      showError(form, "The server could not be reached: nothing was lost, try again.");
    }).finally(function () { if (button) { button.disabled = false; } });
  }

  function showTemplate(select) {
    var form = select.form;
    form.querySelectorAll("fieldset[data-template]").forEach(function (fs) {
      var on = fs.getAttribute("data-template") === select.value;
      fs.hidden = !on;
      fs.disabled = !on;
    });
    preview(form);
  }

  function preview(form) {
    form.querySelectorAll("fieldset[data-template]").forEach(function (fs) {
      var values = {};
      fs.querySelectorAll("input[data-param]").forEach(function (i) { values[i.getAttribute("data-param")] = i.value; });
      fs.querySelectorAll("[data-text]").forEach(function (p) {
        var header = p.classList.contains("preview-header");
        p.textContent = p.getAttribute("data-text").replace(/\{\{\s*([A-Za-z0-9_]+)\s*\}\}/g, function (all, name) {
          var key = header ? "header:" + name : name;
          return values[key] ? values[key] : all;
        });
      });
    });
  }

  function wire(root) {
    if (!root) { return; }
    localTimes(root);
    root.querySelectorAll("form[data-post]").forEach(function (form) {
      form.addEventListener("submit", function (e) { e.preventDefault(); post(form); });
    });
    root.querySelectorAll("textarea[name=text]").forEach(function (area) {
      area.addEventListener("keydown", function (e) {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); area.form.requestSubmit(); }
      });
    });
    var select = root.querySelector("select#template");
    if (select) {
      select.addEventListener("change", function () { showTemplate(select); });
      select.form.addEventListener("input", function () { preview(select.form); });
      showTemplate(select);
    }
  }

  function scrollToEnd() {
    var list = document.querySelector("ol.messages");
    if (list) { list.scrollTop = list.scrollHeight; }
  }

  // Keyboard: j/k move in the list, Enter opens, / searches, r replies.
  document.addEventListener("keydown", function (e) {
    var tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || e.ctrlKey || e.metaKey || e.altKey) { return; }
    var items = Array.prototype.slice.call(document.querySelectorAll("#threads li.thread"));
    var at = items.findIndex(function (li) { return li.classList.contains("selected"); });
    if (at < 0) { at = items.findIndex(function (li) { return li.classList.contains("current"); }); }
    if (e.key === "j" || e.key === "k") {
      e.preventDefault();
      if (!items.length) { return; }
      var next = e.key === "j" ? Math.min(items.length - 1, at + 1) : Math.max(0, at - 1);
      items.forEach(function (li) { li.classList.remove("selected"); });
      items[next].classList.add("selected");
      items[next].querySelector("a").focus();
    } else if (e.key === "/") {
      e.preventDefault();
      var q = document.getElementById("q");
      if (q) { q.focus(); }
    } else if (e.key === "r") {
      var area = document.getElementById("reply-text");
      if (area) { e.preventDefault(); area.focus(); }
    }
  });

  // The live feed: each event names the threads that changed.
  var pending = null;
  function schedule(ids) {
    var id = currentThread();
    var mine = ids === null || (id && ids.indexOf(id) >= 0);
    if (pending) { pending.list = true; pending.conversation = pending.conversation || mine; return; }
    pending = { list: true, conversation: mine };
    setTimeout(function () {
      var todo = pending;
      pending = null;
      if (todo.list) { refreshList().catch(function () {}); }
      if (todo.conversation) { refreshConversation().catch(function () {}); }
    }, 100);
  }

  // Leaving the page (a link, sign-out) closes the feed first: its error
  // would otherwise ask for the session just ended and send the page to
  // "your session has ended" instead of where it was going.
  var leaving = false;
  function connect() {
    if (!("EventSource" in window) || !main) { return; }
    var source = new EventSource("/inbox/events");
    var leave = function () { leaving = true; source.close(); };
    window.addEventListener("pagehide", leave);
    window.addEventListener("beforeunload", leave);
    document.querySelectorAll("form[action='/signout']").forEach(function (f) { f.addEventListener("submit", leave); });
    source.addEventListener("threads", function (e) {
      try { schedule(JSON.parse(e.data).threads || []); } catch (err) { schedule(null); }
    });
    source.addEventListener("resync", function () { schedule(null); });
    source.addEventListener("signedout", function () { source.close(); signedOut(); });
    source.addEventListener("error", function () {
      if (leaving) { return; }
      // EventSource reconnects by itself (with Last-Event-ID); a lost
      // session is told apart from a network break here.
      fetch("/inbox/session", { headers: { "X-Kairo-Fetch": "1" }, credentials: "same-origin" }).then(function (r) {
        if (r.status === 401) { source.close(); signedOut(); }
      }).catch(function () {});
    });
    window.kairoLive = source;
  }

  localTimes(document);
  wire(document);
  watchMore();
  scrollToEnd();
  countdowns();
  setInterval(countdowns, 30000);
  connect();
})();
