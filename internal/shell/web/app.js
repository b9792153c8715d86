// podcopy web shell: one WebSocket per session. Binary frames carry terminal bytes both ways;
// text frames carry JSON control messages ({"type":"resize"} up, {"type":"exit"|"error"} down).
"use strict";
const $ = (id) => document.getElementById(id);
const term = new Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000 });
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open($("terminal"));
fit.fit();
let ws = null;

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function b64url(s) {
  return btoa(unescape(encodeURIComponent(s))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function sendSize() {
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  }
}

async function fillDefault() {
  const token = $("token").value.trim();
  if (!token || $("pod").value) return;
  const r = await fetch("api/v1/default", { headers: { Authorization: "Bearer " + token } });
  if (r.ok) {
    const t = await r.json();
    $("namespace").value = t.namespace; $("pod").value = t.pod; $("container").value = t.container;
  }
}

$("token").addEventListener("change", () => { fillDefault().catch(() => {}); });

$("connect").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (ws) ws.close();
  await fillDefault().catch(() => {});
  const token = $("token").value.trim();
  const q = new URLSearchParams({ namespace: $("namespace").value, pod: $("pod").value, container: $("container").value });
  if ($("dir").value) q.set("dir", $("dir").value);
  const cmd = $("command").value.trim();
  if (cmd) cmd.split(/\s+/).forEach((a) => q.append("command", a));
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname.replace(/[^/]*$/, "") + "api/v1/session?" + q;
  term.reset();
  status("connecting to " + $("namespace").value + "/" + $("pod").value + " ...");
  ws = new WebSocket(url, ["podcopy.shell.v1", "base64url.bearer.authorization.k8s.io." + b64url(token)]);
  ws.binaryType = "arraybuffer";
  let ended = "", opened = false;
  ws.onopen = () => {
    opened = true;
    status("connected to " + $("namespace").value + "/" + $("pod").value + ($("container").value ? " (" + $("container").value + ")" : ""));
    $("close").disabled = false;
    fit.fit(); sendSize(); term.focus();
  };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      const msg = JSON.parse(m.data);
      if (msg.type === "error") { ended = msg.message; status("refused: " + msg.message, true); }
      if (msg.type === "exit") { ended = msg.message; }
      return;
    }
    term.write(new Uint8Array(m.data));
  };
  ws.onclose = (e) => {
    $("close").disabled = true;
    // A refused sign-in never upgrades (HTTP 401, or 429 after repeated failures).
    const why = ended || e.reason || (opened ? "connection closed (code " + e.code + ")" : "sign-in refused: check the token (or wait a minute after repeated failures)");
    status("session ended: " + why, e.code !== 1000);
    term.write("\r\n\x1b[2m[session ended: " + why + "]\x1b[0m\r\n");
    ws = null;
  };
});

$("close").addEventListener("click", () => { if (ws) ws.close(1000, "closed by user"); });
term.onData((d) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(new TextEncoder().encode(d)); });
window.addEventListener("resize", () => { fit.fit(); sendSize(); });
term.onResize(() => sendSize());
