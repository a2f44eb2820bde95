// crmchat inspector: the little the pages need from script. Everything works without it except the
// demo's one-click login, the confirmation before a reset and the live updates.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // `serve --demo` prints /_crmchat/ui/login#token=...: the fragment never reaches the server or a log; it is
  // taken out of the address bar and history before the form is sent.
  const login = document.getElementById("login-form");
  if (login && location.hash.startsWith("#token=")) {
    const token = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname + location.search);
    if (token) {
      document.getElementById("token").value = token;
      login.submit();
    }
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }

  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
    });
  }

  // A live list (the newest page of Requests): rows rendered by the server arrive as server-sent events and go
  // on top; the list keeps its page size, and the Older link follows the rows that roll off the end.
  const live = document.querySelector("ol[data-stream]");
  if (live && window.EventSource) {
    const keep = Number(live.dataset.keep) || 50;
    const total = document.getElementById("journal-total");
    const older = document.getElementById("older-link");
    const state = document.getElementById("live-state");
    const source = new EventSource(live.dataset.stream);
    source.addEventListener("request", (event) => {
      const template = document.createElement("template");
      template.innerHTML = event.data;
      const row = template.content.firstElementChild;
      // The page and the stream may both hold a call made while the page was being read.
      if (!row || live.querySelector(`li[data-id="${row.dataset.id}"]`)) return;
      live.prepend(row);
      document.getElementById("journal-empty")?.remove();
      let dropped = false;
      while (live.children.length > keep) {
        live.lastElementChild.remove();
        dropped = true;
      }
      if (dropped && older) {
        older.href = older.dataset.base + live.lastElementChild.dataset.id;
        older.hidden = false;
      }
    });
    source.addEventListener("total", (event) => {
      if (total) total.textContent = event.data;
    });
    // A stream ends now and then and the browser reconnects by itself; only a refused one is for good.
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && state) state.textContent = "Live updates stopped: reload the page.";
    });
  }

  // A live block (the Events list): the server sends it again, rendered, whenever it changed. Open details
  // stay open.
  const block = document.querySelector("div[data-live]");
  if (block && window.EventSource) {
    const state = document.getElementById("live-state");
    const source = new EventSource(block.dataset.live);
    source.addEventListener("list", (event) => {
      const open = new Set([...block.querySelectorAll("article[data-id]")]
        .filter((a) => a.querySelector("details")?.open).map((a) => a.dataset.id));
      block.innerHTML = event.data;
      for (const id of open) block.querySelector(`article[data-id="${id}"] details`)?.setAttribute("open", "");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && state) state.textContent = "Live updates stopped: reload the page.";
    });
  }
});
