// podcopy evidence console: namespaces -> pods and their podcopy status -> a pod's
// collections -> one collection (custody record, files, preview), with start, stop, verify,
// download and shell. Every call carries the signed-in user's own token; every value from
// the cluster is shown as text (textContent), never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { ns: "", pod: null, collection: null, request: "", timer: null };

  function say(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
    return e;
  }

  function size(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }

  async function api(path, opts) {
    const o = Object.assign({ headers: {} }, opts || {});
    o.headers.Authorization = "Bearer " + $("token").value.trim();
    const r = await fetch("api/v1/console/" + path, o);
    const body = await r.json().catch(() => ({ error: "HTTP " + r.status }));
    if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
    return body;
  }

  const q = (o) => new URLSearchParams(o).toString();

  async function signIn() {
    if (!$("token").value.trim()) { say("enter your token first", true); return; }
    try {
      const r = await api("namespaces");
      const list = $("ns-list");
      list.replaceChildren(...r.namespaces.map((n) => el("option", { value: n })));
      $("who").textContent = r.namespaces.length ? r.namespaces.length + " namespaces" : "type a namespace";
      say(r.message ? "signed in; you may not list namespaces, so type one (" + r.message + ")" : "signed in: choose a namespace");
      if ($("ns").value) await loadPods();
    } catch (e) { say("sign-in failed: " + e.message, true); }
  }

  function podcopyCell(st) {
    if (!st) return "";
    let t = st.phase;
    if (st.collection) t += " · " + st.collection;
    return t;
  }

  function progressText(st) {
    if (!st) return "";
    let t = st.files + " files, " + size(st.bytes);
    if (st.expectedBytes) t += " of " + size(st.expectedBytes);
    return t;
  }

  async function loadPods() {
    state.ns = $("ns").value.trim();
    if (!state.ns) { say("type a namespace", true); return; }
    try {
      const pods = await api("pods?" + q({ namespace: state.ns }));
      const body = $("pods").tBodies[0];
      body.replaceChildren(...pods.map((p) => {
        const st = p.status;
        const tr = el("tr", { className: state.pod && state.pod.name === p.name ? "selected" : "" },
          el("td", {}, el("button", { className: "link", type: "button", onclick: () => selectPod(p) }, p.name)),
          el("td", {}, p.phase), el("td", {}, podcopyCell(st)), el("td", {}, progressText(st)),
          el("td", {}, st ? (st.reason || "") : ""), el("td", {}, st ? (st.requestedBy || "") : ""), el("td", {}, st ? (st.startTime || "") : ""));
        tr.dataset.pod = p.name;
        return tr;
      }));
      if (state.pod) {
        const p = pods.find((x) => x.name === state.pod.name);
        if (p) { state.pod = p; showProgress(p.status); }
      }
      say(pods.length + (pods.length === 1 ? " pod" : " pods") + " in " + state.ns);
    } catch (e) { say("pods of " + state.ns + ": " + e.message, true); }
  }

  function poll() {
    if (state.timer) clearInterval(state.timer);
    state.timer = setInterval(() => { if (state.ns) loadPods(); }, 2000);
  }

  async function selectPod(p) {
    state.pod = p; state.collection = null;
    $("detail-pane").hidden = false;
    $("collection").hidden = true;
    $("pod-title").textContent = state.ns + "/" + p.name;
    $("ctr").replaceChildren(...p.containers.map((c) => el("option", { value: c }, c)));
    for (const tr of $("pods").tBodies[0].rows) tr.className = tr.dataset.pod === p.name ? "selected" : "";
    showProgress(p.status);
    await loadCollections();
  }

  async function loadCollections() {
    const body = $("collections").tBodies[0];
    body.replaceChildren(el("tr", {}, el("td", { colSpan: 7 }, "reading the analysis pod ...")));
    try {
      const cols = await api("collections?" + q({ namespace: state.ns, pod: state.pod.name }));
      // A FAILED collection's manifest is not believed: its counts are not shown.
      const failed = (c) => c.signature === "FAILED";
      body.replaceChildren(...cols.map((c) => el("tr", {},
        el("td", {}, el("button", { className: "link", type: "button", onclick: () => openCollection(c.collection) }, c.collection)),
        el("td", {}, c.startTime || ""), el("td", {}, failed(c) ? "—" : c.files), el("td", {}, failed(c) ? "—" : size(c.bytes)), el("td", {}, c.requestedBy || ""),
        el("td", { title: c.problem || "" }, badge(c.signature)), el("td", {}, c.retention || ""))));
      if (!cols.length) body.replaceChildren(el("tr", {}, el("td", { colSpan: 7 }, "no complete collection of this pod in the analysis pod")));
    } catch (e) {
      body.replaceChildren(el("tr", {}, el("td", { colSpan: 7, className: "problem" }, e.message)));
    }
  }

  function badge(sig) {
    const cls = sig === "verified" ? "verified" : sig === "FAILED" ? "failed" : "unsigned";
    return el("span", { className: "badge " + cls }, sig);
  }

  function showProgress(st) {
    if (!st || !state.request || st.request !== state.request) return;
    $("progress-row").hidden = false;
    const bar = $("bar");
    let pct = null;
    if (st.phase === "Succeeded") pct = 100;
    else if (st.expectedBytes) pct = Math.min(100, Math.floor(100 * st.bytes / st.expectedBytes));
    if (pct === null) bar.removeAttribute("value"); else bar.value = pct;
    let t = (pct === null ? "" : pct + " % · ") + st.phase + " · " + progressText(st);
    if (st.message && st.phase !== "Succeeded") t += " · " + st.message;
    $("bar-text").textContent = t;
    $("bar-text").className = st.phase === "Failed" || st.phase === "Rejected" ? "problem" : "";
    if (st.phase === "Succeeded" && st.collection && state.done !== st.request) {
      state.done = st.request;
      loadCollections();
    }
  }

  async function startCollection(ev) {
    ev.preventDefault();
    const paths = $("paths").value.split(/[\s,]+/).filter((x) => x);
    if (!paths.length) { say("give at least one absolute path", true); return; }
    try {
      const r = await api("collect", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ namespace: state.ns, pod: state.pod.name, paths, container: $("ctr").value,
          follow: $("follow").checked, interval: $("interval").value.trim() }) });
      state.request = r.request;
      $("progress-row").hidden = false; $("bar").value = 0; $("bar-text").textContent = "requested " + r.request;
      say("collection requested on " + state.ns + "/" + state.pod.name + " as you (request " + r.request + ")");
      await loadPods();
    } catch (e) { say("not started: " + e.message, true); }
  }

  async function stopFollow() {
    try {
      await api("stop?" + q({ namespace: state.ns, pod: state.pod.name }), { method: "POST" });
      say("stopped: the agent ships what is left and ends following " + state.pod.name);
    } catch (e) { say("stop: " + e.message, true); }
  }

  function row(k, v) { return v ? el("tr", {}, el("th", {}, k), el("td", {}, v)) : null; }

  async function openCollection(id) {
    state.collection = id;
    $("collection").hidden = false;
    $("col-title").textContent = "collection " + id;
    for (const x of ["verify-result", "download-result", "sig-problem", "preview", "preview-name"]) $(x).textContent = "";
    $("sig").replaceChildren(); $("files-state").replaceChildren();
    try {
      const d = await api("collection?" + q({ namespace: state.ns, pod: state.pod.name, id }));
      state.detail = d;
      $("sig").replaceChildren(badge(d.signature));
      $("sig-problem").textContent = d.problem || (d.signature === "verified" ? "custody record signed by key " + d.signedBy + "; manifest.json matches it (Verify re-hashes every file)" : "");
      $("sig-problem").className = d.problem ? "problem" : "note";
      const c = d.custody, m = d.manifest;
      const rows = [];
      if (c) {
        rows.push(row("Pod", c.pod.namespace + "/" + c.pod.name + " (uid " + c.pod.uid + ")"), row("Node", c.node),
          row("Container", c.container.name + (c.container.id ? " · " + c.container.id : "")), row("Image", c.container.image),
          row("Image digest", c.container.imageDigest), row("Request", c.request.id + " · " + c.request.mode + " · " + (c.request.paths || []).join(", ")),
          row("Requested by", c.requestedBy), row("Request origin", c.requestOrigin), row("Source", c.sourceKind),
          row("Agent", c.agent.version + " on " + c.agent.node), row("Destination", c.destination), row("Started", c.startTime), row("Ended", c.endTime),
          row("Totals", c.totals.files + " files, " + size(c.totals.bytes) + ", " + c.totals.skipped + " skipped"),
          row("Alert", c.alert ? c.alert.source + " rule " + c.alert.rule + " (" + (c.alert.priority || "") + ", " + (c.alert.time || "") + ")" : ""),
          row("Occasion", c.occasion));
      } else if (m) {
        rows.push(row("Pod", m.source.namespace + "/" + m.source.pod + " (uid " + m.source.uid + ")"), row("Container", m.source.container),
          row("Requested by", m.requestedBy), row("Started", m.startTime), row("Ended", m.completionTime), row("Note", "no signed custody record"));
      }
      rows.push(row("Retention", d.retention), row("Stored in", d.analysis.namespace + "/" + d.analysis.pod + ":" + d.dir));
      $("custody").tBodies[0].replaceChildren(...rows.filter((x) => x));
      const files = [];
      if (m) {
        for (const f of m.files || []) files.push({ rel: m.source.container + f.path, path: f.path, size: f.size, mode: f.mode, sha256: f.sha256 });
        for (const r of m.records || []) if (r.sha256) files.push({ rel: r.name, path: r.name, size: r.size, mode: r.kind, sha256: r.sha256 });
      }
      $("files").tBodies[0].replaceChildren(...files.map((f) => el("tr", {}, el("td", {}, f.path), el("td", {}, size(f.size)), el("td", {}, f.mode),
        el("td", { className: "hash" }, f.sha256), el("td", {}, el("button", { className: "link", type: "button", onclick: () => preview(f.rel) }, "preview")))));
      $("skipped").tBodies[0].replaceChildren(...((m && m.skipped) || []).map((s) => el("tr", {}, el("td", {}, s.path), el("td", {}, s.type), el("td", {}, s.reason))));
    } catch (e) { $("sig-problem").textContent = e.message; $("sig-problem").className = "problem"; }
  }

  async function preview(rel) {
    $("preview-name").textContent = rel;
    $("preview").textContent = "reading ...";
    try {
      const p = await api("preview?" + q({ namespace: state.ns, pod: state.pod.name, id: state.collection, file: rel }));
      $("preview").textContent = p.binary ? "(binary: " + p.bytes + " bytes read, not shown)" : p.text + (p.truncated ? "\n[... the first " + p.bytes + " bytes]" : "");
    } catch (e) { $("preview").textContent = e.message; }
  }

  function describe(r) {
    const rec = r.record ? "record of collection " + r.record.collection + ", pod " + r.record.namespace + "/" + r.record.pod + " (uid " + r.record.uid + ")" : "";
    if (r.verified) return "VERIFIED: " + r.files + " files (" + size(r.bytes) + "); every SHA-256 matches " + (r.signedBy ? "the custody record signed by key " + r.signedBy + (rec ? ", " + rec : "") : "manifest.json (unsigned)");
    const lines = [];
    if (rec) lines.push("RECORD   " + rec);
    for (const x of r.problems || []) lines.push("BINDING  " + x);
    for (const x of r.tampered || []) lines.push("TAMPERED " + x);
    for (const x of r.mismatched || []) lines.push("MISMATCH " + x);
    for (const x of r.missing || []) lines.push("MISSING  " + x);
    for (const x of r.unexpected || []) lines.push("EXTRA    " + x);
    return "FAILED (" + (r.mismatched || []).length + " mismatched, " + (r.missing || []).length + " missing, " + (r.unexpected || []).length + " unexpected):\n" + lines.join("\n");
  }

  function showResult(id, r) {
    $(id).textContent = describe(r);
    $(id).className = "result " + (r.verified ? "good" : "bad");
    $("files-state").replaceChildren(el("span", { className: "badge " + (r.verified ? "verified" : "failed") }, r.verified ? "files verified" : "files FAILED"));
  }

  async function verify() {
    $("verify-result").className = "result"; $("verify-result").textContent = "hashing every file in the analysis pod ...";
    try {
      showResult("verify-result", await api("verify?" + q({ namespace: state.ns, pod: state.pod.name, id: state.collection }), { method: "POST" }));
    } catch (e) { $("verify-result").className = "result bad"; $("verify-result").textContent = e.message; }
  }

  async function download() {
    const out = $("download-result");
    out.className = "result"; out.textContent = "preparing the download ...";
    try {
      const t = await api("downloads?" + q({ namespace: state.ns, pod: state.pod.name, id: state.collection }), { method: "POST" });
      const a = el("a", { href: t.url, download: "" });
      document.body.append(a); a.click(); a.remove();
      out.textContent = "downloading; every file is checked as it streams ...";
      for (;;) {
        await new Promise((res) => setTimeout(res, 1000));
        const s = await api("downloads/" + t.ticket + "/result");
        if (s.state !== "done") continue;
        if (s.error) { out.className = "result bad"; out.textContent = "download FAILED: " + s.error; return; }
        showResult("download-result", s.result);
        out.textContent = "download " + out.textContent;
        return;
      }
    } catch (e) { out.className = "result bad"; out.textContent = e.message; }
  }

  function openShell(ns, pod, container, dir) {
    $("namespace").value = ns; $("pod").value = pod; $("container").value = container || ""; $("dir").value = dir || "";
    $("connect").requestSubmit();
  }

  $("signin").addEventListener("click", () => { signIn(); });
  $("load").addEventListener("click", () => { loadPods(); poll(); });
  $("ns").addEventListener("change", () => { if ($("token").value.trim()) { loadPods(); poll(); } });
  $("collect-form").addEventListener("submit", startCollection);
  $("stop").addEventListener("click", stopFollow);
  $("verify").addEventListener("click", verify);
  $("download").addEventListener("click", download);
  $("shell-src").addEventListener("click", () => openShell(state.ns, state.pod.name, $("ctr").value, ""));
  $("shell-here").addEventListener("click", () => {
    const d = state.detail;
    if (d) openShell(d.analysis.namespace, d.analysis.pod, d.analysis.container, d.dir);
  });
})();
