// The local stack's page: every call goes to the gateway, cross-origin,
// as a real front-end's would (the stack lists this page's origin in the
// gateway's RCM_CORS_ORIGINS).
"use strict";

const $ = (id) => document.getElementById(id);
const eventTypes = ["campaign_started", "opt_out", "campaign_ended", "consent_changed",
  "contact_attempted", "contact_blocked", "contact_outcome"];
let cfg, token = "", source = null, lastEventId = "", streamGeneration = 0;

// api calls the gateway with the Bearer token and returns {status, body}:
// body is the parsed JSON, or the text for text/plain answers.
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(cfg.gatewayURL + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  const isJSON = (resp.headers.get("Content-Type") || "").startsWith("application/json");
  return { status: resp.status, body: isJSON && text ? JSON.parse(text) : text };
}

function show(el, r) {
  el.textContent = r.status + "\n" + (typeof r.body === "string" ? r.body : JSON.stringify(r.body, null, 2));
}

// openStream mints a ticket and opens the stream with it. A ticket opens
// one stream: on any error the page mints another and resumes after the
// last event it saw (lastEventId), which EventSource would not do itself.
async function openStream() {
  const generation = ++streamGeneration;
  if (source) source.close();
  $("stream-status").textContent = "(opening)";
  const r = await api("POST", "/v1/activity/stream-tickets");
  if (generation !== streamGeneration) return;
  if (r.status !== 201) {
    $("stream-status").textContent = "(ticket refused: " + r.status + ")";
    return;
  }
  let url = cfg.gatewayURL + "/v1/activity/stream?ticket=" + encodeURIComponent(r.body.ticket);
  if (lastEventId) url += "&lastEventId=" + encodeURIComponent(lastEventId);
  source = new EventSource(url);
  source.onopen = () => { $("stream-status").textContent = "(live)"; };
  for (const type of eventTypes) {
    source.addEventListener(type, (ev) => {
      lastEventId = ev.lastEventId;
      const item = JSON.parse(ev.data);
      const li = document.createElement("li");
      li.dataset.type = item.type;
      li.textContent = item.occurredAt + "  " + item.type + "  " + item.documentId + "  " + item.summary;
      $("activity").prepend(li);
    });
  }
  source.onerror = () => {
    source.close();
    if (generation !== streamGeneration) return;
    $("stream-status").textContent = "(reconnecting)";
    setTimeout(() => { if (generation === streamGeneration) openStream(); }, 1000);
  };
}

async function signIn() {
  const resp = await fetch("/token", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sub: $("sub").value.trim(), org: $("org").value.trim() }) });
  const body = await resp.json();
  if (!resp.ok) { $("whoami").textContent = body.error; return; }
  token = body.token;
  lastEventId = "";
  $("activity").textContent = "";
  $("whoami").textContent = "signed in as " + ($("org").value.trim() || $("sub").value.trim());
  openStream();
}

async function main() {
  cfg = await (await fetch("/config.json")).json();
  for (const d of cfg.documents) $("document").append(new Option(d, d));
  $("signin-button").onclick = signIn;
  const doc = () => encodeURIComponent($("document").value);
  $("start").onclick = async () => {
    const r = await api("POST", "/v1/documents/" + doc() + "/rcm", {
      sms: $("sms").checked, email: $("email").checked, call: $("call").checked,
      tone: $("tone").value, cadence: $("cadence").value });
    if (r.status === 201) $("campaign").value = r.body.campaign.id;
    show($("campaign-result"), r);
  };
  $("optout").onclick = async () => show($("campaign-result"), await api("POST", "/v1/documents/" + doc() + "/rcm/opt-out",
    { campaignId: $("campaign").value.trim(), channel: $("channel").value }));
  $("log").onclick = async () => show($("log-result"), await api("GET", "/v1/compliance-log"));
  $("verify").onclick = async () => {
    const r = await api("GET", "/v1/compliance-log/verify");
    const ok = r.status === 200 && r.body.ok === true;
    $("verify-result").className = ok ? "ok" : "bad";
    $("verify-result").textContent = ok ? "verified: " + r.body.entries + " entries" : "NOT verified";
    show($("log-result"), r);
  };
  $("checkpoint").onclick = async () => {
    const r = await api("GET", "/v1/compliance-log/checkpoint");
    const witnessed = r.status === 200 && /^— \S*witness\S* /m.test(r.body);
    // A checkpoint's second line is its tree size: it follows the log
    // within seconds, so it may cover fewer entries than a verify just
    // counted.
    const size = r.status === 200 ? r.body.split("\n")[1] : "";
    $("witness-status").className = witnessed ? "ok" : "bad";
    $("witness-status").textContent = r.status !== 200 ? "no checkpoint yet" :
      "checkpoint of " + size + " entries: " + (witnessed ? "cosigned by the witness" : "not cosigned");
    show($("log-result"), r);
  };
  $("consent").onclick = async () => show($("document-result"), await api("GET", "/v1/documents/" + doc() + "/consent"));
  $("attempts").onclick = async () => show($("document-result"), await api("GET", "/v1/documents/" + doc() + "/contact-attempts"));
  $("sub").value = cfg.account;
  signIn();
}

main();
