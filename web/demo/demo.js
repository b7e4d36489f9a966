// The demo conferencing page: plain DOM on top of the browser SDK (/sdk/sfu.js).
//
// URL parameters: `session` (pre-fills the meeting name), `name`, `server` (the SFU when the page is
// served elsewhere; default: this page's origin), `key` (a web-only key instead of /demo/config.json),
// `token` (a join JWT).

const params = new URLSearchParams(location.search);
const serverUrl = (params.get("server") || location.origin).replace(/\/+$/, "");
const sdk = await import(`${serverUrl}/sdk/sfu.js`);
const { Session, connectionQuality } = sdk;

const CHAT_PIPELINE = "chat";
const STATS_INTERVAL_MS = 1000;
/** Reactions go over the lossy data channel with this topic; the payload is the emoji in UTF-8. */
const REACTION_TOPIC = "reaction";
const REACTIONS = ["👍", "❤️", "😂", "🎉", "✋"];
const REACTION_MIN_INTERVAL_MS = 120;
const MAX_FLOATS_PER_TILE = 8;
const utf8 = new TextDecoder();

const $ = (id) => document.getElementById(id);
const ui = {
  joinScreen: $("join-screen"), joinForm: $("join-form"), joinError: $("join-error"), joinButton: $("join-button"),
  sessionInput: $("session-input"), nameInput: $("name-input"), tokenInput: $("token-input"), keyHint: $("key-hint"),
  joinMic: $("join-mic"), joinCam: $("join-cam"), advanced: $("advanced"),
  previewVideo: $("preview-video"), previewPlaceholder: $("preview-placeholder"),
  room: $("room"), roomTitle: $("room-title"), count: $("participant-count"), recording: $("recording-pill"),
  banner: $("banner"), grid: $("grid"), messages: $("messages"), chatForm: $("chat-form"), chatInput: $("chat-input"),
  chatBadge: $("chat-badge"), micButton: $("mic-button"), camButton: $("cam-button"), screenButton: $("screen-button"),
  chatButton: $("chat-button"), chatClose: $("chat-close"), reactButton: $("react-button"), reactionTray: $("reaction-tray"), leaveButton: $("leave-button"), copyLink: $("copy-link"),
  leftScreen: $("left-screen"), leftTitle: $("left-title"), leftDetail: $("left-detail"),
  rejoinButton: $("rejoin-button"), homeButton: $("home-button"), toasts: $("toasts"), tileTemplate: $("tile-template"),
};

const state = {
  demoKey: null,
  session: null,
  preview: null, // MediaStream captured for the join preview, handed over to publish
  mic: null,
  cam: null,
  screen: null,
  tiles: new Map(), // key (uid, "local" or "screen:<feedId>") -> tile
  unread: 0,
  statsTimer: null,
  lastJoin: null,
  lastReactionAt: 0,
};

// -- errors --------------------------------------------------------------------------------------------

/** A title and a sentence for any error the SDK or the browser can raise. */
function describeError(error) {
  const message = error?.message ?? String(error);
  switch (error?.code) {
    case "forbidden":
      if (/origin/i.test(message)) {
        return {
          title: "Origin not allowed",
          detail: `This page (${location.origin}) may not use this key: origin not allowed. `
            + "Open the meeting from an allowed address or join with a token.",
        };
      }
      if (/full/i.test(message)) {
        return { title: "Session full", detail: "This meeting has reached its participant limit (session is full)." };
      }
      return { title: "Not allowed", detail: `The server refused: ${message}.` };
    case "unauthorized":
      return { title: "Access denied", detail: `The key or token was not accepted: ${message}.` };
    case "bad_request":
      return { title: "Check the form", detail: `${message}.` };
    case "permission_denied":
      return {
        title: "Permission denied",
        detail: `${capitalize(message)}. Allow access in your browser's site settings, then turn it on again.`,
      };
    case "device_not_found":
      return { title: "No device found", detail: `${capitalize(message)}.` };
    case "connection_failed":
      return { title: "Cannot reach the server", detail: `${capitalize(message)}. Check your connection and try again.` };
    case "rate_limited":
      return { title: "Slow down", detail: "Too many requests; try again in a moment." };
    default:
      return { title: "Something went wrong", detail: message };
  }
}

const warn = (error) => console.warn("demo:", error);
const capitalize = (text) => text.charAt(0).toUpperCase() + text.slice(1);

function showJoinError(error) {
  const { title, detail } = describeError(error);
  ui.joinError.replaceChildren(strong(title), document.createTextNode(detail));
  ui.joinError.dataset.code = error?.code ?? "";
  ui.joinError.hidden = false;
  ui.joinError.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function toast(error, { kind = "error", timeoutMs = 6000 } = {}) {
  const { title, detail } = typeof error === "string" ? { title: error, detail: "" } : describeError(error);
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.dataset.code = error?.code ?? "";
  el.append(strong(title), document.createTextNode(detail));
  ui.toasts.append(el);
  setTimeout(() => el.remove(), timeoutMs);
}

function strong(text) {
  const el = document.createElement("strong");
  el.textContent = text;
  return el;
}

// -- join ----------------------------------------------------------------------------------------------

async function loadConfig() {
  if (params.get("key")) return params.get("key");
  try {
    const response = await fetch(`${serverUrl}/demo/config.json`, { cache: "no-store" });
    return response.ok ? (await response.json()).key : null;
  } catch {
    return null;
  }
}

async function startPreview() {
  if (!navigator.mediaDevices?.getUserMedia) return;
  try {
    state.preview = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: true,
    });
    ui.previewVideo.srcObject = state.preview;
    ui.previewPlaceholder.hidden = true;
  } catch (error) {
    ui.previewPlaceholder.textContent = error?.name === "NotAllowedError"
      ? "Camera and microphone are blocked: you can still join and listen."
      : "No camera available.";
  }
}

function slug(text) {
  const base = text.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
  return `${base || "guest"}-${Math.random().toString(36).slice(2, 6)}`;
}

async function join(event) {
  event?.preventDefault();
  ui.joinError.hidden = true;
  const sessionName = ui.sessionInput.value.trim();
  const name = ui.nameInput.value.trim();
  const token = ui.tokenInput.value.trim();
  if (!token && !/^[A-Za-z0-9_.:@-]{1,128}$/.test(sessionName)) {
    showJoinError({ code: "bad_request", message: "The meeting name may use letters, digits and _ . : @ -" });
    return;
  }
  if (!token && !name) {
    showJoinError({ code: "bad_request", message: "Please enter your name" });
    return;
  }
  if (!token && !state.demoKey) {
    showJoinError({ code: "unauthorized", message: "no demo key is available for this page; paste a join token" });
    ui.advanced.open = true;
    return;
  }
  localStorage.setItem("demo.name", name);
  const options = token
    ? { url: serverUrl, token }
    : { url: serverUrl, key: state.demoKey, session: sessionName, uid: slug(name), name };
  state.lastJoin = { options, mic: ui.joinMic.checked, cam: ui.joinCam.checked };
  ui.joinButton.disabled = true;
  ui.joinButton.textContent = "Joining…";
  try {
    const session = await Session.connect(options);
    enterRoom(session);
    await publishLocal(state.lastJoin.mic, state.lastJoin.cam);
    // open the data channels now, so the first reaction is not lost while they open
    session.openData().catch(warn);
  } catch (error) {
    showJoinError(error);
  } finally {
    ui.joinButton.disabled = false;
    ui.joinButton.textContent = "Join now";
  }
}

async function publishLocal(withMic, withCam) {
  const session = state.session;
  const previewAudio = state.preview?.getAudioTracks()[0];
  const previewVideo = state.preview?.getVideoTracks()[0];
  state.preview = null;
  ui.previewVideo.srcObject = null;
  if (!withMic) previewAudio?.stop();
  if (!withCam) previewVideo?.stop();
  const tasks = [];
  if (withMic) {
    tasks.push(session.publishMicrophone({ track: previewAudio }).then((feed) => {
      state.mic = feed;
      feed.on("muted", renderLocalState).on("unmuted", renderLocalState);
    }));
  }
  if (withCam) {
    tasks.push(session.publishCamera({ simulcast: true, track: previewVideo }).then((feed) => {
      state.cam = feed;
      feed.attach(localTile().video);
      feed.on("muted", renderLocalState).on("unmuted", renderLocalState);
    }));
  }
  for (const result of await Promise.allSettled(tasks)) {
    if (result.status === "rejected") toast(result.reason);
  }
  renderLocalState();
}

// -- room ----------------------------------------------------------------------------------------------

function enterRoom(session) {
  state.session = session;
  window.demo = { session, state };
  ui.joinScreen.hidden = true;
  ui.leftScreen.hidden = true;
  ui.room.hidden = false;
  if (window.matchMedia("(max-width: 900px)").matches) toggleChat(false);
  requestAnimationFrame(layoutGrid);
  ui.roomTitle.textContent = session.sid;
  ui.messages.replaceChildren();
  const url = new URL(location.href);
  url.search = "";
  url.searchParams.set("session", session.sid);
  if (params.get("server")) url.searchParams.set("server", serverUrl);
  history.replaceState(null, "", url);

  const local = localTile();
  const ownName = session.localParticipant?.name || "You";
  setTileName(local, ownName, session.uid, `${ownName} (you)`);
  local.el.dataset.uid = session.uid;

  session.on("participantjoined", (p) => {
    const tile = participantTile(p);
    p.on("updated", () => setTileName(tile, p.name, p.uid));
    renderCount();
  });
  session.on("participantleft", (p) => {
    removeTile(p.uid);
    renderCount();
  });
  session.on("feedpublished", onFeedPublished);
  session.on("message", (message) => message.pipeline === CHAT_PIPELINE && appendMessage(message));
  session.on("activespeakers", renderSpeakers);
  session.on("recording", () => { ui.recording.hidden = !session.recording; });
  session.on("reconnecting", ({ attempt }) => showBanner(`Connection lost. Reconnecting (attempt ${attempt})…`));
  session.on("reconnected", ({ resumed }) => {
    showBanner(null);
    if (!resumed) session.openData().catch(warn);
  });
  session.on("data", onData);
  session.on("disconnected", onDisconnected);

  for (const message of session.history[CHAT_PIPELINE] ?? []) appendMessage(message, { quiet: true });
  if (!ui.messages.children.length) emptyChat();
  ui.recording.hidden = !session.recording;
  renderCount();
  renderLocalState();
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(() => updateStats().catch(() => {}), STATS_INTERVAL_MS);
}

function onFeedPublished(feed) {
  if (feed.source === "screen") {
    const tile = screenTile(feed);
    tile.videoFeed = feed;
    feed.attach(tile.video).catch(warn);
    feed.on("track", () => renderTile(tile)).on("unpublished", () => removeTile(tile.key));
    renderTile(tile);
    return;
  }
  const tile = participantTile(feed.participant ?? { uid: feed.uid, name: feed.uid });
  if (feed.kind === "audio") {
    // microphone and screen audio play from the participant's tile
    const audio = tile.audio();
    feed.attach(audio).catch(warn);
    feed.on("unpublished", () => audio.remove());
    if (feed.source === "screen_audio") return;
  }
  if (feed.kind === "video") {
    tile.videoFeed = feed;
    feed.attach(tile.video).catch(warn);
  } else {
    tile.micFeed = feed;
  }
  const update = () => renderTile(tile);
  feed.on("updated", update).on("track", update).on("unpublished", () => {
    if (tile.videoFeed === feed) tile.videoFeed = null;
    if (tile.micFeed === feed) tile.micFeed = null;
    update();
  });
  update();
}

function onDisconnected({ reason, error }) {
  clearInterval(state.statsTimer);
  toggleReactionTray(false);
  const messages = {
    left: ["You left the meeting", ""],
    kicked: ["You were removed from the meeting", "A moderator removed you."],
    session_ended: ["The meeting has ended", "The host ended this meeting for everyone."],
    replaced: ["You joined from another tab", "This tab was disconnected because you joined again elsewhere."],
    token_expired: ["Your access expired", "Your token expired; join again with a fresh one."],
    server_shutdown: ["The server is restarting", "Try to rejoin in a moment."],
  };
  const [title, detail] = messages[reason] ?? ["You were disconnected", error ? describeError(error).detail : reason ?? ""];
  for (const key of [...state.tiles.keys()]) removeTile(key);
  state.mic = state.cam = state.screen = null;
  state.session = null;
  showBanner(null);
  ui.room.hidden = true;
  ui.leftScreen.hidden = false;
  ui.leftTitle.textContent = title;
  ui.leftDetail.textContent = detail;
}

// -- tiles ---------------------------------------------------------------------------------------------

function createTile(key, { uid, name, kind }) {
  const el = ui.tileTemplate.content.firstElementChild.cloneNode(true);
  el.dataset.key = key;
  el.dataset.uid = uid;
  el.dataset.kind = kind;
  el.dataset.frames = "0";
  el.dataset.quality = "unknown";
  el.dataset.mic = "off";
  const tile = {
    key, el, uid, kind,
    video: el.querySelector("video"),
    videoFeed: null,
    micFeed: null,
    audioEls: [],
    audio() {
      const audio = document.createElement("audio");
      audio.autoplay = true;
      el.append(audio);
      this.audioEls.push(audio);
      return audio;
    },
  };
  el.classList.add(kind);
  setTileName(tile, name, uid);
  state.tiles.set(key, tile);
  ui.grid.append(el);
  layoutGrid();
  return tile;
}

function localTile() {
  const existing = state.tiles.get("local");
  if (existing) return existing;
  const tile = createTile("local", { uid: state.session?.uid ?? "", name: "You", kind: "local" });
  ui.grid.prepend(tile.el);
  return tile;
}

function participantTile(p) {
  return state.tiles.get(p.uid) ?? createTile(p.uid, { uid: p.uid, name: p.name, kind: "participant" });
}

function screenTile(feed) {
  const key = `screen:${feed.feedId}`;
  const owner = state.session?.participants.get(feed.uid);
  return state.tiles.get(key) ?? createTile(key, { uid: feed.uid, name: `${owner?.name ?? feed.uid} · screen`, kind: "screen" });
}

function removeTile(key) {
  const tile = state.tiles.get(key);
  if (!tile) return;
  tile.videoFeed?.detach?.(tile.video);
  tile.el.remove();
  state.tiles.delete(key);
  layoutGrid();
}

function setTileName(tile, name, uid, label = name) {
  tile.el.querySelector(".name").textContent = label || uid;
  const avatar = tile.el.querySelector(".avatar span");
  avatar.textContent = initials(name || uid);
  avatar.parentElement.style.setProperty("--avatar", `hsl(${hue(uid)} 55% 45%)`);
}

function renderTile(tile) {
  const video = tile.videoFeed;
  tile.el.classList.toggle("has-video", Boolean(video && video.track && !video.muted));
  if (tile.kind !== "screen") tile.el.dataset.mic = !tile.micFeed ? "off" : tile.micFeed.muted ? "muted" : "on";
  tile.el.dataset.camera = !video ? "off" : video.muted ? "muted" : "on";
}

function renderLocalState() {
  const tile = localTile();
  const micMuted = !state.mic || state.mic.muted;
  const camOff = !state.cam || state.cam.muted;
  tile.el.dataset.mic = !state.mic ? "off" : state.mic.muted ? "muted" : "on";
  tile.el.classList.toggle("has-video", !camOff);
  setPressed(ui.micButton, micMuted, micMuted ? "Unmute microphone" : "Mute microphone");
  setPressed(ui.camButton, camOff, camOff ? "Turn camera on" : "Turn camera off");
  setPressed(ui.screenButton, Boolean(state.screen), state.screen ? "Stop sharing" : "Share your screen");
}

function setPressed(button, pressed, title) {
  button.setAttribute("aria-pressed", String(pressed));
  button.title = title;
}

/** Picks the column count that gives the largest 16:9 tiles fitting the grid's box. */
function layoutGrid() {
  const n = Math.max(1, state.tiles.size);
  const gap = 12;
  const width = ui.grid.clientWidth;
  const height = ui.grid.clientHeight;
  if (!width || !height) return;
  let best = { cols: 1, tileWidth: 0 };
  for (let cols = 1; cols <= n; cols += 1) {
    const rows = Math.ceil(n / cols);
    const byWidth = (width - gap * (cols - 1)) / cols;
    const byHeight = ((height - gap * (rows - 1)) / rows) * (16 / 9);
    const tileWidth = Math.floor(Math.min(byWidth, byHeight));
    if (tileWidth > best.tileWidth) best = { cols, tileWidth };
  }
  ui.grid.style.setProperty("--cols", String(best.cols));
  ui.grid.style.setProperty("--tile-width", `${best.tileWidth}px`);
}

function renderCount() {
  const n = (state.session?.participants.size ?? 0) + 1;
  ui.count.textContent = `${n} participant${n === 1 ? "" : "s"}`;
}

function renderSpeakers(speakers) {
  const speaking = new Set(speakers.filter((s) => (s.level ?? 1) > 0).map((s) => s.uid));
  for (const tile of state.tiles.values()) {
    tile.el.classList.toggle("speaking", tile.kind !== "screen" && speaking.has(tile.uid));
  }
}

async function updateStats() {
  for (const tile of state.tiles.values()) {
    let feed;
    if (tile.kind === "local") feed = state.cam ?? state.mic;
    else feed = tile.videoFeed ?? tile.micFeed;
    const stats = feed ? await feed.getStats() : null;
    if (!stats) continue;
    tile.el.dataset.quality = connectionQuality(stats);
    if (stats.framesDecoded !== undefined) tile.el.dataset.frames = String(stats.framesDecoded);
    const q = tile.el.dataset.quality;
    tile.el.querySelector(".quality").title = `Connection: ${q}`
      + (stats.rttMs !== undefined ? ` · ${Math.round(stats.rttMs)} ms` : "")
      + (stats.frameWidth ? ` · ${stats.frameWidth}×${stats.frameHeight}` : "");
  }
}

const initials = (name) => name.split(/[\s._-]+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("") || "?";
const hue = (text) => [...text].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 360, 7);

// -- chat ----------------------------------------------------------------------------------------------

function emptyChat() {
  const li = document.createElement("li");
  li.className = "empty";
  li.textContent = "No messages yet. Say hello!";
  ui.messages.append(li);
}

function appendMessage(message, { own = false, quiet = false } = {}) {
  const data = message.data ?? {};
  const text = typeof data === "string" ? data : data.text;
  if (typeof text !== "string") return;
  ui.messages.querySelector(".empty")?.remove();
  const session = state.session;
  const mine = own || message.from === session?.uid;
  const author = mine ? "You" : session?.participants.get(message.from)?.name ?? data.name ?? message.from;
  const li = document.createElement("li");
  li.className = mine ? "own" : "";
  li.dataset.from = message.from ?? "";
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("b");
  who.textContent = author;
  const time = new Date(message.ts ?? Date.now()).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.append(who, document.createTextNode(time));
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  li.append(meta, body);
  ui.messages.append(li);
  ui.messages.scrollTop = ui.messages.scrollHeight;
  if (!quiet && !mine && ui.room.classList.contains("chat-hidden")) {
    state.unread += 1;
    ui.chatBadge.textContent = String(state.unread);
    ui.chatBadge.hidden = false;
  }
}

async function sendChat(event) {
  event.preventDefault();
  const text = ui.chatInput.value.trim();
  if (!text || !state.session) return;
  ui.chatInput.value = "";
  const name = state.session.localParticipant?.name || "";
  try {
    const seq = await state.session.send({ text, name }, { pipeline: CHAT_PIPELINE, persist: true });
    appendMessage({ from: state.session.uid, seq, ts: Date.now(), data: { text, name } }, { own: true });
  } catch (error) {
    ui.chatInput.value = text;
    toast(error);
  }
}

function toggleChat(show = ui.room.classList.contains("chat-hidden")) {
  ui.room.classList.toggle("chat-hidden", !show);
  setPressed(ui.chatButton, show, show ? "Hide chat" : "Show chat");
  if (show) {
    state.unread = 0;
    ui.chatBadge.hidden = true;
    ui.chatInput.focus();
  }
  requestAnimationFrame(layoutGrid);
}

// -- reactions -----------------------------------------------------------------------------------------

function onData({ from, topic, payload }) {
  if (topic !== REACTION_TOPIC) return;
  const emoji = utf8.decode(payload);
  const tile = state.tiles.get(from);
  if (tile && REACTIONS.includes(emoji)) showReaction(tile, emoji);
}

function sendReaction(emoji) {
  const session = state.session;
  if (!session || !REACTIONS.includes(emoji)) return;
  const now = performance.now();
  if (now - state.lastReactionAt < REACTION_MIN_INTERVAL_MS) return;
  state.lastReactionAt = now;
  showReaction(localTile(), emoji);
  session.publishData(emoji, { reliable: false, topic: REACTION_TOPIC }).catch(warn);
}

/** A floating emoji rising over the tile, gone after its animation. */
function showReaction(tile, emoji) {
  let layer = tile.el.querySelector(".reactions");
  if (!layer) {
    layer = document.createElement("div");
    layer.className = "reactions";
    tile.el.append(layer);
  }
  while (layer.childElementCount >= MAX_FLOATS_PER_TILE) layer.firstElementChild.remove();
  const float = document.createElement("span");
  float.className = "reaction-float";
  float.textContent = emoji;
  float.style.setProperty("--x", `${8 + Math.random() * 64}%`);
  float.style.setProperty("--drift", `${Math.round(Math.random() * 60 - 30)}px`);
  const remove = () => float.remove();
  float.addEventListener("animationend", remove);
  setTimeout(remove, 4000); // also when the animation never runs (a hidden tab)
  layer.append(float);
  tile.el.dataset.reaction = emoji;
  tile.el.dataset.reactions = String(Number(tile.el.dataset.reactions ?? 0) + 1);
}

function toggleReactionTray(show = ui.reactionTray.hidden) {
  ui.reactionTray.hidden = !show;
  ui.reactButton.setAttribute("aria-expanded", String(show));
  if (show) ui.reactionTray.querySelector("button")?.focus();
}

// -- controls ------------------------------------------------------------------------------------------

async function toggleMic() {
  const session = state.session;
  if (!session) return;
  try {
    if (!state.mic) {
      state.mic = await session.publishMicrophone();
      state.mic.on("muted", renderLocalState).on("unmuted", renderLocalState);
    } else if (state.mic.muted) {
      await state.mic.unmute();
    } else {
      await state.mic.mute();
    }
  } catch (error) {
    toast(error);
  }
  renderLocalState();
}

async function toggleCamera() {
  const session = state.session;
  if (!session) return;
  try {
    if (!state.cam) {
      state.cam = await session.publishCamera({ simulcast: true });
      state.cam.attach(localTile().video);
      state.cam.on("muted", renderLocalState).on("unmuted", renderLocalState);
    } else if (state.cam.muted) {
      await state.cam.unmute();
    } else {
      await state.cam.mute();
    }
  } catch (error) {
    toast(error);
  }
  renderLocalState();
}

async function toggleScreen() {
  const session = state.session;
  if (!session) return;
  if (state.screen) {
    const screen = state.screen;
    state.screen = null;
    removeTile("local-screen");
    await screen.unpublish().catch(toast);
    renderLocalState();
    return;
  }
  try {
    const screen = await session.publishScreen();
    state.screen = screen;
    const tile = createTile("local-screen", { uid: session.uid, name: "Your screen", kind: "screen" });
    tile.el.classList.add("has-video");
    screen.attach(tile.video);
    screen.on("ended", () => {
      if (state.screen === screen) {
        state.screen = null;
        removeTile("local-screen");
        renderLocalState();
      }
    });
  } catch (error) {
    if (error?.code === "permission_denied") toast({ code: "permission_denied", message: "screen sharing was cancelled or blocked" });
    else toast(error);
  }
  renderLocalState();
}

async function leave() {
  await state.session?.leave();
}

function showBanner(text) {
  ui.banner.hidden = !text;
  ui.banner.textContent = text ?? "";
}

// -- wiring --------------------------------------------------------------------------------------------

ui.joinForm.addEventListener("submit", join);
ui.chatForm.addEventListener("submit", sendChat);
ui.micButton.addEventListener("click", toggleMic);
ui.camButton.addEventListener("click", toggleCamera);
ui.screenButton.addEventListener("click", toggleScreen);
ui.chatButton.addEventListener("click", () => toggleChat());
ui.chatClose.addEventListener("click", () => toggleChat(false));
ui.reactButton.addEventListener("click", () => toggleReactionTray());
ui.reactionTray.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-emoji]");
  if (button) sendReaction(button.dataset.emoji);
});
document.addEventListener("click", (event) => {
  if (!ui.reactionTray.hidden && !event.target.closest(".react-wrap")) toggleReactionTray(false);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !ui.reactionTray.hidden) {
    toggleReactionTray(false);
    ui.reactButton.focus();
  }
});
ui.leaveButton.addEventListener("click", leave);
ui.rejoinButton.addEventListener("click", async () => {
  ui.leftScreen.hidden = true;
  ui.joinScreen.hidden = false;
  await startPreview();
  join();
});
ui.homeButton.addEventListener("click", () => {
  ui.leftScreen.hidden = true;
  ui.joinScreen.hidden = false;
  startPreview();
});
ui.copyLink.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(location.href);
    toast("Invite link copied", { kind: "info", timeoutMs: 2500 });
  } catch {
    toast("Copy the address bar to invite others", { kind: "info", timeoutMs: 4000 });
  }
});
new ResizeObserver(layoutGrid).observe(ui.grid);
window.addEventListener("beforeunload", () => state.session?.leave());

ui.sessionInput.value = params.get("session") || "demo";
ui.nameInput.value = params.get("name") || localStorage.getItem("demo.name") || "";
if (params.get("token")) {
  ui.tokenInput.value = params.get("token");
  ui.advanced.open = true;
}
state.demoKey = await loadConfig();
ui.keyHint.textContent = state.demoKey
  ? "Without a token the page joins with this server's demo web-only key."
  : "No demo key is available for this page: a token is required.";
document.body.dataset.ready = "true";
startPreview();
