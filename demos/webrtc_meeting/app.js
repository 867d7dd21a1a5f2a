// EdgeOmni meeting page: join with camera + microphone, see your own captions over your video and the
// whole meeting's transcript. Plain JS, no build step. Protocol: docs/WEBRTC_PROTOCOL.md.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pc: null, session: null, stream: null, token: "", live: new Map() };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

// Non-trickle signaling: the offer goes out once every local candidate is in it.
function gatheringComplete(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

// Noise suppression and automatic gain control reshape speech in ways that cost the recogniser words
// (measured with the browser test); echo cancellation stays on so a meeting on loudspeakers still works.
const AUDIO = { echoCancellation: true, noiseSuppression: false, autoGainControl: false, channelCount: 1 };

async function openMedia(withCamera) {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: AUDIO, video: withCamera });
  } catch (err) {
    if (!withCamera) throw err;
    setStatus(`camera unavailable (${err.name}); joining with the microphone only`);
    return navigator.mediaDevices.getUserMedia({ audio: AUDIO, video: false });
  }
}

async function join(event) {
  event.preventDefault();
  state.token = $("token").value.trim();
  $("join").disabled = true;
  try {
    const config = await (await fetch("config", { headers: authHeaders() })).json();  // TURN credentials need it
    state.stream = await openMedia($("use-camera").checked);
    $("self-view").srcObject = state.stream;
    const pc = new RTCPeerConnection({ iceServers: config.iceServers });
    state.pc = pc;
    const channel = pc.createDataChannel("captions");  // must exist before the offer
    channel.onmessage = (msg) => onEvent(JSON.parse(msg.data));
    for (const track of state.stream.getTracks()) pc.addTrack(track, state.stream);
    const burnIn = $("burn-in").checked && $("use-camera").checked;
    pc.ontrack = (e) => {  // our own video, back from the server with the captions drawn on it
      if (!burnIn || e.track.kind !== "video") return;
      $("self-view").srcObject = new MediaStream([e.track]);
      document.body.dataset.burnedIn = "true";  // the picture carries the captions: no HTML overlay on top
    };
    pc.onconnectionstatechange = () => {
      if (pc !== state.pc) return;  // a connection we already left
      if (pc.connectionState === "failed") {
        setStatus("connection failed (no route to the server's media port?); press Join to try again", true);
        leave();
      } else if (pc.connectionState !== "connected") {
        setStatus(`connection ${pc.connectionState}`);
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc);
    const reply = await fetch("offer", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", name: $("name").value.trim(),
                             room: $("room").value.trim() || "main", burn_in: burnIn }),
    });
    const answer = await reply.json();
    if (!reply.ok) throw new Error(`server refused the offer (HTTP ${reply.status}): ${answer.error}`);
    state.session = answer.session;
    document.body.dataset.session = answer.session;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    setStatus(`joined as ${answer.participant}; connecting…`);
    $("leave").disabled = false;
  } catch (err) {
    setStatus(String(err.message || err), true);
    await leave();
  }
}

async function leave() {
  const { pc, session, stream } = state;
  state.pc = state.session = state.stream = null;
  if (session) {
    fetch(`session/${session}`, { method: "DELETE", headers: authHeaders() }).catch(() => {});
  }
  if (pc) pc.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  delete document.body.dataset.burnedIn;
  $("join").disabled = false;
  $("leave").disabled = true;
}

// One transcript line per utterance in progress and participant; a final replaces it in place.
function liveLine(event) {
  let li = state.live.get(event.session);
  if (!li) {
    li = document.createElement("li");
    li.dataset.session = event.session;
    $("transcript").appendChild(li);
    state.live.set(event.session, li);
  }
  return li;
}

function fillLine(li, event, kind) {
  li.className = kind;
  li.dataset.participant = event.participant;
  li.replaceChildren();
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = event.participant;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = event.text;
  li.append(who, text);
}

function notice(text, kind = "notice") {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  $("transcript").appendChild(li);
}

function showOverlay(event) {
  const overlay = $("overlay");
  overlay.replaceChildren();
  const committed = document.createElement("span");
  committed.textContent = event.type === "partial" ? event.committed || "" : event.text;
  overlay.appendChild(committed);
  if (event.type === "partial") {
    const tentative = document.createElement("span");
    tentative.className = "tentative";
    tentative.textContent = (event.committed ? " " : "") + (event.tentative || event.text);
    overlay.appendChild(tentative);
  }
}

function onEvent(event) {
  const mine = event.session === state.session;
  switch (event.type) {
    case "partial":
      fillLine(liveLine(event), event, "partial");
      if (mine) showOverlay(event);
      break;
    case "final": {
      const li = liveLine(event);
      state.live.delete(event.session);
      if (event.text) fillLine(li, event, "final"); else li.remove();
      if (mine) showOverlay(event);
      break;
    }
    case "visual":
      notice(`${event.participant} · ${event.text}`, "visual");
      break;
    case "start":
      if (mine) setStatus(`captioning ${event.participant} (${event.describe})`);
      else notice(`${event.participant} joined`);
      break;
    case "end":
      if (mine) setStatus("captioning ended");
      break;
    case "error":
      setStatus(`server: ${event.message}`, true);
      break;
    default:
      break;  // later versions may add event types
  }
  const panel = $("transcript").parentElement;
  panel.scrollTop = panel.scrollHeight;
}

window.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(location.search);
  $("token").value = params.get("token") || "";
  if (params.has("token")) {  // out of the address bar, the history and any link copied from it
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? `?${query}` : "") + location.hash);
  }
  $("name").value = params.get("name") || "";
  $("room").value = params.get("room") || "main";
  $("join-form").addEventListener("submit", join);
  $("leave").addEventListener("click", leave);
  window.addEventListener("beforeunload", leave);
});
