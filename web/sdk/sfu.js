// Browser SDK of the SFU: one ES module, no build step, no dependencies.
//
//   import { Session } from "/sdk/sfu.js";
//   const session = await Session.connect({ url, token });            // or { url, key, session, uid, name }
//   session.on("feedpublished", (feed) => feed.attach(videoElement));
//   const cam = await session.publishCamera({ simulcast: true });
//   await session.send({ text: "hi" }, { pipeline: "chat", persist: true });
//
// It speaks the wire contract of PROTOCOL.md: one WebSocket (`/v1/rtc`) and two RTCPeerConnections,
// `publisher` (the page offers) and `subscriber` (the server offers, the page answers, one at a time).

export const SDK_NAME = "sfu-js";
export const SDK_VERSION = "0.1.0";

const PING_INTERVAL_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;
const GATHER_WAIT_MS = 1_000;
const QUALITY_DEBOUNCE_MS = 150;
const RECONNECT_DELAYS_MS = [300, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000, 8_000, 8_000];
/** Close codes after which a reconnect cannot help (PROTOCOL.md "Close codes"). */
const FINAL_CLOSE_CODES = new Set([1000, 4001, 4003, 4010, 4011, 4012, 4013]);
/** Redirects (`closed {reason:"redirect", url}`, close 4014) one join follows in a row. */
const MAX_REDIRECTS = 3;
/** Binary data channels (PROTOCOL.md "Binary data channels"): labels, payload limit, flow control. */
const RELIABLE_LABEL = "reliable";
const LOSSY_LABEL = "lossy";
const MAX_DATA_PAYLOAD_BYTES = 15 * 1024;
const DATA_HIGH_WATER_BYTES = 1024 * 1024;
const DATA_LOW_WATER_BYTES = 256 * 1024;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();
/** Simulcast encodings, lowest first (PROTOCOL.md "Simulcast"). */
const SIMULCAST_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

// -- errors ------------------------------------------------------------------------------------------------

/** Every error of the SDK; `code` is the wire code of PROTOCOL.md or one of the SDK's own codes. */
export class SfuError extends Error {
  /**
   * @param {string} message
   * @param {string} [code]
   */
  constructor(message, code) {
    super(message);
    this.name = new.target.name;
    /** @type {string} */
    this.code = code ?? new.target.code ?? "internal";
  }
}
SfuError.code = "internal";

export class BadRequestError extends SfuError {}
BadRequestError.code = "bad_request";
export class UnauthorizedError extends SfuError {}
UnauthorizedError.code = "unauthorized";
export class ForbiddenError extends SfuError {}
ForbiddenError.code = "forbidden";
export class NotFoundError extends SfuError {}
NotFoundError.code = "not_found";
export class ConflictError extends SfuError {}
ConflictError.code = "conflict";
export class TooLargeError extends SfuError {}
TooLargeError.code = "too_large";
export class RateLimitedError extends SfuError {}
RateLimitedError.code = "rate_limited";
/** The server is at capacity for a new session: try again later (an addition to PROTOCOL.md). */
export class UnavailableError extends SfuError {}
UnavailableError.code = "unavailable";
export class InternalError extends SfuError {}
InternalError.code = "internal";
/** The socket could not be opened or was lost (SDK code `connection_failed`). */
export class ConnectionError extends SfuError {}
ConnectionError.code = "connection_failed";
/** Nodes kept redirecting the join past the SDK's bound (SDK code `redirect_loop`). */
export class TooManyRedirectsError extends SfuError {}
TooManyRedirectsError.code = "redirect_loop";
/** The browser or the user refused camera, microphone or screen (SDK code `permission_denied`). */
export class PermissionDeniedError extends SfuError {}
PermissionDeniedError.code = "permission_denied";
/** No such capture device (SDK code `device_not_found`). */
export class DeviceNotFoundError extends SfuError {}
DeviceNotFoundError.code = "device_not_found";

const ERRORS_BY_CODE = Object.fromEntries(
  [BadRequestError, UnauthorizedError, ForbiddenError, NotFoundError, ConflictError, TooLargeError,
    RateLimitedError, UnavailableError, InternalError].map((cls) => [cls.code, cls]),
);

/**
 * The typed error of a wire `error` frame.
 * @param {{code?: string, message?: string}} frame
 * @returns {SfuError}
 */
export function errorFromWire(frame) {
  const cls = ERRORS_BY_CODE[frame.code] ?? SfuError;
  return new cls(frame.message || frame.code || "error", frame.code);
}

/** Turns a getUserMedia/getDisplayMedia failure into a typed error. */
function captureError(error, what) {
  if (error?.name === "NotAllowedError" || error?.name === "SecurityError") {
    return new PermissionDeniedError(`permission to use the ${what} was denied`);
  }
  if (error?.name === "NotFoundError" || error?.name === "OverconstrainedError") {
    return new DeviceNotFoundError(`no ${what} was found`);
  }
  return new SfuError(`${what} could not be started: ${error?.message ?? error}`, "capture_failed");
}

// -- events ------------------------------------------------------------------------------------------------

/** A minimal event emitter: `on`, `off`, `once`; listeners that throw are reported, not propagated. */
export class Emitter {
  #listeners = new Map();

  /**
   * @param {string} event
   * @param {(...args: any[]) => void} listener
   * @returns {this}
   */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return this;
  }

  /** @returns {this} */
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
    return this;
  }

  /** @returns {this} */
  once(event, listener) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      listener(...args);
    };
    return this.on(event, wrapper);
  }

  /** @protected */
  emit(event, ...args) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`sfu: a "${event}" listener failed`, error);
      }
    }
  }
}

// -- helpers -----------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function wsUrlOf(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (!u.pathname.endsWith("/v1/rtc")) u.pathname = u.pathname.replace(/\/?$/, "/v1/rtc");
  return u.toString();
}

function waitForGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function randomUid() {
  return "web-" + Math.random().toString(36).slice(2, 10);
}

/** The bytes of `data` (ArrayBuffer, TypedArray, DataView or string, which is sent as UTF-8). */
function bytesOf(data) {
  if (typeof data === "string") return utf8Encoder.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new BadRequestError("data must be an ArrayBuffer, a TypedArray, a DataView or a string");
}

/**
 * A client-to-server data message: 2-byte big-endian header length, UTF-8 JSON header, payload.
 * @param {Uint8Array} payload
 * @param {{to?: string[], topic?: string}} header
 */
function encodeDataMessage(payload, header) {
  const head = utf8Encoder.encode(JSON.stringify(header));
  if (head.length > 0xffff) throw new TooLargeError("data header is too large");
  const wire = new Uint8Array(2 + head.length + payload.length);
  wire[0] = head.length >> 8;
  wire[1] = head.length & 0xff;
  wire.set(head, 2);
  wire.set(payload, 2 + head.length);
  return wire;
}

/**
 * A server-to-client data message, or null when it is not one (`{"from":uid,"topic":..}` header).
 * @param {ArrayBuffer} raw
 * @returns {{from: string, topic: string | null, payload: ArrayBuffer} | null}
 */
function decodeDataMessage(raw) {
  if (!(raw instanceof ArrayBuffer) || raw.byteLength < 2) return null;
  const view = new Uint8Array(raw);
  const size = (view[0] << 8) | view[1];
  if (raw.byteLength < 2 + size) return null;
  let header;
  try {
    header = JSON.parse(utf8Decoder.decode(view.subarray(2, 2 + size)));
  } catch {
    return null;
  }
  if (header === null || typeof header !== "object") return null;
  return {
    from: typeof header.from === "string" ? header.from : "",
    topic: typeof header.topic === "string" ? header.topic : null,
    payload: raw.slice(2 + size),
  };
}

/**
 * A connection quality grade from summarized stats.
 * @param {FeedStats | null} stats
 * @returns {"excellent" | "good" | "poor" | "lost" | "unknown"}
 */
export function connectionQuality(stats) {
  if (!stats) return "unknown";
  if (stats.stalled) return "lost";
  const loss = stats.lossRate ?? 0;
  const rtt = stats.rttMs ?? 0;
  const jitter = stats.jitterMs ?? 0;
  if (loss > 0.1 || rtt > 500 || jitter > 100) return "poor";
  if (loss > 0.02 || rtt > 200 || jitter > 40) return "good";
  return "excellent";
}

/**
 * Summarized stats of one sender or receiver.
 * @typedef {object} FeedStats
 * @property {"inbound" | "outbound"} direction
 * @property {number} packets   packets received or sent
 * @property {number} packetsLost
 * @property {number} lossRate  lost / (received + lost) since the previous call
 * @property {number} bitrateBps  since the previous call
 * @property {number} [framesDecoded]
 * @property {number} [framesEncoded]
 * @property {number} [frameWidth]
 * @property {number} [frameHeight]
 * @property {number} [jitterMs]
 * @property {number} [rttMs]
 * @property {boolean} stalled  no packet since the previous call
 */

async function summarizeStats(report, direction, previous) {
  const out = { direction, packets: 0, packetsLost: 0, bytes: 0, stalled: false, at: performance.now() };
  report.forEach((s) => {
    if (s.type === `${direction}-rtp`) {
      out.packets += direction === "inbound" ? s.packetsReceived ?? 0 : s.packetsSent ?? 0;
      out.bytes += direction === "inbound" ? s.bytesReceived ?? 0 : s.bytesSent ?? 0;
      out.packetsLost += s.packetsLost ?? 0;
      if (s.framesDecoded !== undefined) out.framesDecoded = (out.framesDecoded ?? 0) + s.framesDecoded;
      if (s.framesEncoded !== undefined) out.framesEncoded = (out.framesEncoded ?? 0) + s.framesEncoded;
      if (s.frameWidth && s.frameWidth > (out.frameWidth ?? 0)) {
        out.frameWidth = s.frameWidth;
        out.frameHeight = s.frameHeight;
      }
      if (s.jitter !== undefined) out.jitterMs = Math.max(out.jitterMs ?? 0, s.jitter * 1000);
    } else if (s.type === "remote-inbound-rtp") {
      if (s.packetsLost !== undefined && direction === "outbound") out.packetsLost += s.packetsLost;
      if (s.roundTripTime !== undefined) out.rttMs = s.roundTripTime * 1000;
    } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
      out.rttMs ??= s.currentRoundTripTime * 1000;
    }
  });
  if (previous) {
    const packets = out.packets - previous.packets;
    const lost = Math.max(0, out.packetsLost - previous.packetsLost);
    out.lossRate = packets + lost > 0 ? lost / (packets + lost) : 0;
    const seconds = (out.at - previous.at) / 1000;
    out.bitrateBps = seconds > 0 ? Math.round(((out.bytes - previous.bytes) * 8) / seconds) : 0;
    out.stalled = packets === 0;
  } else {
    out.lossRate = 0;
    out.bitrateBps = 0;
  }
  return out;
}

// -- signaling ---------------------------------------------------------------------------------------------

/** One WebSocket: requests with ids and their replies, events to `onEvent`, a keep-alive ping. */
class Signal {
  constructor(url, onEvent, onClose) {
    this.url = url;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
    this.pingTimer = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (error) {
        reject(new ConnectionError(`cannot open ${this.url}: ${error.message}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.pingTimer = setInterval(() => this.notify({ type: "ping" }), PING_INTERVAL_MS);
        resolve();
      };
      ws.onmessage = (event) => this.#receive(event.data);
      ws.onclose = (event) => {
        clearInterval(this.pingTimer);
        const error = new ConnectionError(`connection closed (${event.code}${event.reason ? " " + event.reason : ""})`);
        for (const { reject: fail, timer } of this.pending.values()) {
          clearTimeout(timer);
          fail(this.closeError ?? error);
        }
        this.pending.clear();
        if (!opened) reject(new ConnectionError(`cannot connect to ${this.url}`));
        else this.onClose(event.code, event.reason);
      };
    });
  }

  #receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.re !== undefined && this.pending.has(msg.re)) {
      const { resolve, reject, timer } = this.pending.get(msg.re);
      this.pending.delete(msg.re);
      clearTimeout(timer);
      if (msg.type === "error") reject(errorFromWire(msg));
      else resolve(msg);
      return;
    }
    if (msg.type === "error" && msg.negotiation === undefined) {
      // an error without a pending request: the join refusal before a close, or a rate limit
      // (a subscriber-offer timeout carries `negotiation` and is answered by a fresh offer, not a close)
      this.closeError = errorFromWire(msg);
    }
    if (msg.type === "closed" && msg.reason === "redirect" && typeof msg.url === "string") {
      this.redirectUrl = msg.url; // the answer to our join (multi-node --redirect): the session's owner
      return;
    }
    this.onEvent(msg);
  }

  /** Sends a request and resolves with its reply (rejects with a typed SfuError). */
  request(body) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ConnectionError("not connected"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ConnectionError(`no reply to ${body.type} within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...body, id }));
    });
  }

  /** Sends a frame that expects no reply; dropped while disconnected. */
  notify(body) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(body));
  }

  close(code = 1000) {
    clearInterval(this.pingTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.onmessage = null;
      try {
        this.ws.close(code);
      } catch {
        /* already closed */
      }
    }
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new ConnectionError("session closed"));
    }
    this.pending.clear();
  }
}

// -- participants and feeds --------------------------------------------------------------------------------

/** Another participant of the session. */
export class RemoteParticipant extends Emitter {
  constructor(wire) {
    super();
    /** @type {string} */
    this.uid = wire.uid;
    /** @type {string} */
    this.name = wire.name || wire.uid;
    /** @type {Record<string, unknown>} */
    this.description = wire.description ?? {};
    /** @type {Map<string, RemoteFeed>} feeds by feedId */
    this.feeds = new Map();
  }

  /** @internal */
  _update(wire) {
    this.name = wire.name || wire.uid;
    this.description = wire.description ?? {};
    this.emit("updated", this);
  }
}

/**
 * A feed published by another participant. `attach(element)` subscribes and plays it; with adaptive
 * stream the SDK asks for the element's rendered size and pauses it while the element is not visible.
 * Events: `updated` (muted or name changed), `track`, `unpublished`.
 */
export class RemoteFeed extends Emitter {
  constructor(session, wire) {
    super();
    this._session = session;
    /** @type {string} */
    this.feedId = wire.feed_id;
    /** @type {string} */
    this.uid = wire.uid;
    /** @type {"audio" | "video"} */
    this.kind = wire.kind;
    /** @type {string} camera, microphone, screen, screen_audio or custom */
    this.source = wire.source;
    this._apply(wire);
    /** @type {MediaStreamTrack | null} */
    this.track = null;
    /** @type {RTCRtpReceiver | null} */
    this.receiver = null;
    /** @type {Set<HTMLMediaElement>} */
    this.elements = new Set();
    this.unpublished = false;
    this._subscribing = null;
    this._quality = { paused: false, width: 0, height: 0 };
    this._lastStats = null;
  }

  _apply(wire) {
    /** @type {string} */
    this.name = wire.name ?? "";
    /** @type {boolean} */
    this.muted = Boolean(wire.muted);
    /** @type {string} */
    this.codec = wire.codec ?? "";
    /** @type {{rid: string, width: number, height: number, max_bitrate: number}[]} */
    this.layers = wire.layers ?? [];
  }

  /** The participant who publishes it. @returns {RemoteParticipant | undefined} */
  get participant() {
    return this._session.participants.get(this.uid);
  }

  /** Asks the server to forward this feed (idempotent). */
  async subscribe() {
    this._subscribing ??= this._session._signal.request({ type: "subscribe", feed_ids: [this.feedId] })
      .catch((error) => {
        this._subscribing = null;
        throw error;
      });
    await this._subscribing;
  }

  /** Stops receiving this feed (its elements are detached). */
  async unsubscribe() {
    for (const element of [...this.elements]) this.detach(element);
    this._subscribing = null;
    if (!this.unpublished) await this._session._signal.request({ type: "unsubscribe", feed_ids: [this.feedId] });
  }

  /**
   * Subscribes, then plays the feed in `element` (created when omitted: `<video>` or `<audio>`).
   * The element is detached automatically when the feed is unpublished.
   * @template {HTMLMediaElement} E
   * @param {E} [element]
   * @returns {Promise<E>}
   */
  async attach(element) {
    const el = element ?? document.createElement(this.kind === "video" ? "video" : "audio");
    el.autoplay = true;
    if ("playsInline" in el) el.playsInline = true;
    this.elements.add(el);
    if (this.track) this._play(el);
    if (this.kind === "video") this._session._adaptive.observe(el, this);
    try {
      await this.subscribe();
    } catch (error) {
      this.detach(el);
      throw error;
    }
    return el;
  }

  /**
   * Stops playing the feed in `element` (all elements when omitted).
   * @param {HTMLMediaElement} [element]
   */
  detach(element) {
    const targets = element ? [element] : [...this.elements];
    for (const el of targets) {
      if (!this.elements.delete(el)) continue;
      this._session._adaptive.unobserve(el);
      if (el.srcObject && el.srcObject.getTracks().includes(this.track)) el.srcObject = null;
    }
    if (this.kind === "video") this._session._adaptive.schedule(this);
  }

  /**
   * Asks for a quality: `{maxWidth, maxHeight}`, `{layer: "q" | "h" | "f"}` or `{paused: true}`.
   * With adaptive stream (the default) the SDK does this by itself for attached video elements.
   */
  async setQuality({ maxWidth, maxHeight, layer, paused } = {}) {
    const body = { type: "set_quality", feed_id: this.feedId };
    if (maxWidth !== undefined) body.max_width = Math.round(maxWidth);
    if (maxHeight !== undefined) body.max_height = Math.round(maxHeight);
    if (layer !== undefined) body.layer = layer;
    if (paused !== undefined) body.paused = paused;
    await this._session._signal.request(body);
  }

  /** Summarized receive stats since the previous call. @returns {Promise<FeedStats | null>} */
  async getStats() {
    if (!this.receiver) return null;
    const stats = await summarizeStats(await this.receiver.getStats(), "inbound", this._lastStats);
    this._lastStats = stats;
    return stats;
  }

  _play(el) {
    if (el.srcObject?.getTracks?.()[0] !== this.track) el.srcObject = new MediaStream([this.track]);
    el.play?.().catch(() => {
      /* autoplay may need a gesture; the page decides */
    });
  }

  _setTrack(track, receiver) {
    this.track = track;
    this.receiver = receiver;
    for (const el of this.elements) this._play(el);
    this.emit("track", track);
  }

  /** Its m-section now carries another feed: stop showing it; a resubscribe brings a track back. */
  _releaseTrack() {
    for (const el of this.elements) {
      if (el.srcObject?.getTracks?.().includes(this.track)) el.srcObject = null;
    }
    this.track = null;
    this.receiver = null;
  }

  _unpublish() {
    this.unpublished = true;
    this.detach();
    this.track = null;
    this.emit("unpublished", this);
  }
}

/**
 * A feed this page publishes. Events: `muted`, `unmuted`, `layerswanted` (rids), `ended`.
 */
export class LocalFeed extends Emitter {
  constructor(session, { track, source, name, simulcast, stream }) {
    super();
    this._session = session;
    /** @type {string | null} set once the server accepted it */
    this.feedId = null;
    /** @type {MediaStreamTrack} */
    this.track = track;
    /** @type {"audio" | "video"} */
    this.kind = track.kind;
    /** @type {string} */
    this.source = source;
    /** @type {string} */
    this.name = name ?? "";
    /** @type {boolean} */
    this.simulcast = Boolean(simulcast);
    /** @type {boolean} */
    this.muted = false;
    /** @type {MediaStream} */
    this.stream = stream ?? new MediaStream([track]);
    /** @type {RTCRtpTransceiver | null} */
    this.transceiver = null;
    /** @type {LocalFeed | null} the screen share's audio, published with it */
    this.audioFeed = null;
    /** @type {string[] | null} the rids the server last said someone receives */
    this.layersWanted = null;
    this._lastStats = null;
    track.addEventListener("ended", () => {
      if (this._session._localFeeds.has(this)) this.unpublish().catch(() => {});
      this.emit("ended", this);
    });
  }

  /** Mutes: the track sends nothing and the others see `muted`. */
  async mute() {
    await this.#setMuted(true);
  }

  async unmute() {
    await this.#setMuted(false);
  }

  async #setMuted(muted) {
    this.muted = muted;
    this.track.enabled = !muted;
    this.emit(muted ? "muted" : "unmuted", this);
    if (this.feedId) await this._session._signal.request({ type: "mute", feed_id: this.feedId, muted });
  }

  /** Stops publishing and stops the capture (with the screen share's audio). */
  async unpublish() {
    await this._session._unpublish(this);
    if (this.audioFeed) await this.audioFeed.unpublish();
  }

  /** Plays the local preview in `element` (muted). @param {HTMLMediaElement} element */
  attach(element) {
    element.muted = true;
    element.autoplay = true;
    if ("playsInline" in element) element.playsInline = true;
    element.srcObject = new MediaStream([this.track]);
    element.play?.().catch(() => {});
    return element;
  }

  /** Summarized send stats since the previous call. @returns {Promise<FeedStats | null>} */
  async getStats() {
    const sender = this.transceiver?.sender;
    if (!sender) return null;
    const stats = await summarizeStats(await sender.getStats(), "outbound", this._lastStats);
    this._lastStats = stats;
    return stats;
  }

  /** Dynacast: encodings nobody receives stop being encoded. @internal */
  async _applyLayersWanted(rids) {
    this.layersWanted = rids;
    this.emit("layerswanted", rids);
    const sender = this.transceiver?.sender;
    if (!sender || !this.simulcast) return;
    const params = sender.getParameters();
    if (!params.encodings?.some((e) => e.rid)) return;
    let changed = false;
    for (const encoding of params.encodings) {
      const active = rids.includes(encoding.rid);
      if (encoding.active !== active) {
        encoding.active = active;
        changed = true;
      }
    }
    if (changed) await sender.setParameters(params);
  }
}

// -- adaptive stream ---------------------------------------------------------------------------------------

/** Watches attached video elements: rendered size and visibility become `set_quality` requests. */
class AdaptiveStream {
  constructor(enabled) {
    this.enabled = enabled;
    this.feedsByElement = new Map();
    this.visible = new WeakMap();
    this.timers = new Map();
    if (!enabled || typeof IntersectionObserver === "undefined") {
      this.enabled = false;
      return;
    }
    this.intersection = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        this.visible.set(entry.target, entry.isIntersecting);
        this.#scheduleFor(entry.target);
      }
    });
    this.resize = new ResizeObserver((entries) => {
      for (const entry of entries) this.#scheduleFor(entry.target);
    });
    this.onVisibility = () => new Set(this.feedsByElement.values()).forEach((feed) => this.schedule(feed));
    document.addEventListener("visibilitychange", this.onVisibility);
  }

  observe(el, feed) {
    if (!this.enabled) return;
    this.feedsByElement.set(el, feed);
    this.intersection.observe(el);
    this.resize.observe(el);
  }

  unobserve(el) {
    if (!this.enabled || !this.feedsByElement.has(el)) return;
    this.feedsByElement.delete(el);
    this.intersection.unobserve(el);
    this.resize.unobserve(el);
  }

  #scheduleFor(el) {
    const feed = this.feedsByElement.get(el);
    if (feed) this.schedule(feed);
  }

  schedule(feed) {
    if (!this.enabled || this.timers.has(feed)) return;
    this.timers.set(feed, setTimeout(() => {
      this.timers.delete(feed);
      this.#update(feed).catch(() => {
        // the feed went away or is not forwarded yet: forget what was sent so the next change retries
        feed._quality = { paused: false, width: 0, height: 0 };
      });
    }, QUALITY_DEBOUNCE_MS));
  }

  async #update(feed) {
    if (feed.unpublished) return;
    const ratio = globalThis.devicePixelRatio || 1;
    let width = 0;
    let height = 0;
    for (const el of feed.elements) {
      const shown = this.visible.get(el) !== false && el.isConnected && el.getClientRects().length > 0
        && document.visibilityState !== "hidden";
      if (!shown) continue;
      width = Math.max(width, Math.round(el.clientWidth * ratio));
      height = Math.max(height, Math.round(el.clientHeight * ratio));
    }
    const state = feed._quality;
    const paused = width === 0 || height === 0;
    if (paused) {
      if (!state.paused && feed.elements.size > 0 && feed._subscribing) {
        state.paused = true;
        await feed.setQuality({ paused: true });
      }
      return;
    }
    if (state.paused) {
      state.paused = false;
      await feed.setQuality({ paused: false });
    }
    if (width !== state.width || height !== state.height) {
      state.width = width;
      state.height = height;
      await feed.setQuality({ maxWidth: width, maxHeight: height });
    }
  }

  close() {
    if (!this.enabled) return;
    this.intersection.disconnect();
    this.resize.disconnect();
    document.removeEventListener("visibilitychange", this.onVisibility);
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }
}

// -- session -----------------------------------------------------------------------------------------------

/**
 * @typedef {object} ConnectOptions
 * @property {string} url  the server, e.g. `https://sfu.example.com` or `ws://127.0.0.1:7880/v1/rtc`
 * @property {string} [token]  a join JWT; or, for a web-only key:
 * @property {string} [key]  a `wk_...` web-only key (the page's origin must be one of its origins)
 * @property {string} [session]  session name (with `key`)
 * @property {string} [uid]  participant id (with `key`; random when omitted)
 * @property {string} [name]  display name (with `key`)
 * @property {boolean} [autoSubscribe=true]  receive every allowed feed without asking
 * @property {boolean} [adaptiveStream=true]  size and pause video by the attached elements
 * @property {boolean} [dynacast=true]  stop encoding simulcast layers nobody receives
 * @property {boolean} [forceRelay=false]  ICE through TURN only (also when `grants.force_relay`)
 * @property {boolean} [reconnect=true]  resume after a lost connection, with backoff
 */

/**
 * A joined session. Events:
 * `participantjoined` (participant), `participantleft` (participant, reason), `participantupdated`,
 * `feedpublished` (feed), `feedunpublished` (feed), `feedupdated` (feed), `message` (message),
 * `activespeakers` (speakers), `recording` ({state, recording_id}), `layerchanged` ({feed, rid, reason}),
 * `reconnecting` ({attempt, delayMs}), `reconnected` ({resumed}), `disconnected` ({reason, code, error}),
 * `data` ({from, topic, payload: ArrayBuffer, reliable}), `datareset` ({channel, reliable, dropped}: the
 * server fell behind sending to us and dropped `dropped` queued messages; what follows is in order again).
 * `participantjoined` and `feedpublished` listeners are also called at once for those already present.
 */
export class Session extends Emitter {
  /**
   * Joins a session.
   * @param {ConnectOptions} options
   * @returns {Promise<Session>}
   */
  static async connect(options) {
    if (!options?.url) throw new BadRequestError("url is required");
    if (!options.token && !options.key) throw new BadRequestError("token or key is required");
    const session = new Session(options);
    await session._join(false);
    return session;
  }

  /** @param {ConnectOptions} options */
  constructor(options) {
    super();
    this.options = {
      autoSubscribe: true, adaptiveStream: true, dynacast: true, forceRelay: false, reconnect: true,
      ...options,
    };
    if (this.options.key && !this.options.uid) this.options.uid = randomUid();
    /** @type {string} */
    this.sid = "";
    /** @type {string} */
    this.cid = "";
    /** @type {{uid: string, name: string, description: object, grants: object}} */
    this.localParticipant = null;
    /** @type {Map<string, RemoteParticipant>} by uid */
    this.participants = new Map();
    /** @type {Map<string, RemoteFeed>} by feedId */
    this.feeds = new Map();
    /** @type {Record<string, object[]>} `joined.history` plus what arrived since, by pipeline */
    this.history = {};
    /** @type {{uid: string, level: number}[]} */
    this.activeSpeakers = [];
    /** @type {"connecting" | "connected" | "reconnecting" | "closed"} */
    this.state = "connecting";
    this.recording = false;
    this.iceServers = [];
    this._signal = null;
    this._resumeToken = null;
    /** @type {string | null} the node a redirect sent us to: the first stop of every rejoin */
    this._nodeUrl = null;
    this._localFeeds = new Set();
    this._publisher = null;
    this._subscriber = null;
    this._subscriberChain = Promise.resolve();
    this._publishChain = Promise.resolve();
    this._feedIdsByMid = {};
    this._pendingTracks = new Map();
    this._lastSeq = {};
    this._adaptive = new AdaptiveStream(this.options.adaptiveStream);
    /** @type {{pc: RTCPeerConnection, reliable: RTCDataChannel, lossy: RTCDataChannel, ready: Promise<void>} | null} */
    this._data = null;
  }

  /** @returns {string} this participant's uid */
  get uid() {
    return this.localParticipant?.uid ?? "";
  }

  /** @returns {LocalFeed[]} */
  get localFeeds() {
    return [...this._localFeeds];
  }

  on(event, listener) {
    super.on(event, listener);
    if (event === "participantjoined") for (const p of this.participants.values()) listener(p);
    if (event === "feedpublished") for (const f of this.feeds.values()) listener(f);
    return this;
  }

  // -- join, resume, leave -------------------------------------------------------------------------------

  /**
   * Joins at the node that last took us (else `options.url`), following redirects (PROTOCOL.md 4014):
   * at once with the same `join`, at most MAX_REDIRECTS in a row (then TooManyRedirectsError). A redirect
   * target that cannot be reached (its node died: the session's placement moves) is forgotten and
   * `options.url` is tried instead, once per call.
   */
  async _join(resume) {
    const home = wsUrlOf(this.options.url);
    let url = this._nodeUrl ?? home;
    let redirects = 0;
    let fellBack = false;
    for (;;) {
      if (this.state === "closed") throw new ConnectionError("session closed");
      const signal = new Signal(url, (m) => this._onEvent(m),
        (code, reason) => this._onSocketClosed(signal, code, reason));
      try {
        await signal.open();
      } catch (error) {
        if (url === home || fellBack) throw error;
        console.info(`sfu: ${url} is unreachable, joining through ${home} again`);
        this._nodeUrl = null;
        url = home;
        fellBack = true;
        continue;
      }
      const { token, key, session, uid, name, autoSubscribe } = this.options;
      const body = token ? { type: "join", token } : { type: "join", key, session, uid, name };
      body.auto_subscribe = autoSubscribe;
      body.sdk = { name: SDK_NAME, version: SDK_VERSION };
      if (resume && this._resumeToken) body.resume = this._resumeToken;
      this._signal = signal;
      let joined;
      try {
        joined = await signal.request(body);
      } catch (error) {
        signal.close();
        if (!signal.redirectUrl || this.state === "closed") {
          if (url !== home) this._nodeUrl = null; // no joining there: the next try starts at options.url
          throw error;
        }
        if (++redirects > MAX_REDIRECTS) {
          const last = signal.redirectUrl;
          throw new TooManyRedirectsError(`more than ${MAX_REDIRECTS} redirects in a row (last to ${last})`);
        }
        url = wsUrlOf(signal.redirectUrl);
        continue;
      }
      signal.joined = true;
      this._nodeUrl = url === home ? null : url;
      this._applyJoined(joined, resume);
      this.state = "connected";
      return joined;
    }
  }

  /** @returns {string} where the socket joined: `options.url` as a ws(s) URL, or the node a redirect chose */
  get nodeUrl() {
    return this._nodeUrl ?? wsUrlOf(this.options.url);
  }

  _applyJoined(joined, resume) {
    this.sid = joined.session.sid;
    this.cid = joined.session.cid;
    this.recording = Boolean(joined.session.recording);
    this.localParticipant = joined.participant;
    this.iceServers = joined.ice_servers ?? [];
    this._resumeToken = joined.resume;
    const resumed = resume && joined.resumed === true;
    this._resumedFlag = resumed;
    if (!resumed) this._resetRemote(joined.participants);
    for (const [pipeline, messages] of Object.entries(joined.history ?? {})) {
      for (const message of messages) this._remember(message, resume);
      if (!resume) this.history[pipeline] = [...messages];
    }
    return resumed;
  }

  /** Replaces the remote state with a `joined` snapshot; emits what changed. */
  _resetRemote(participants) {
    const wanted = new Map(participants.map((p) => [p.uid, p]));
    for (const feed of [...this.feeds.values()]) {
      const p = wanted.get(feed.uid);
      if (!p || !p.feeds.some((f) => f.feed_id === feed.feedId)) this._removeFeed(feed.feedId);
    }
    for (const p of [...this.participants.values()]) {
      if (!wanted.has(p.uid)) this._removeParticipant(p.uid, "left");
    }
    for (const wire of participants) {
      this._addParticipant(wire);
      for (const feed of wire.feeds ?? []) this._addFeed(feed);
    }
  }

  /** Leaves the session: stops publishing, closes both transports and the socket. */
  async leave() {
    if (this.state === "closed") return;
    this._signal?.notify({ type: "leave" });
    this._close({ reason: "left", code: 1000 });
  }

  _close(detail) {
    if (this.state === "closed") return;
    this.state = "closed";
    clearTimeout(this._reconnectTimer);
    this._signal?.close();
    this._adaptive.close();
    for (const feed of this._localFeeds) feed.track.stop();
    this._localFeeds.clear();
    this._publisher?.close();
    this._subscriber?.close();
    this._data = null;
    for (const feed of this.feeds.values()) feed._unpublish();
    this.emit("disconnected", detail);
  }

  _onSocketClosed(signal, code, reason) {
    // a socket still joining is _join's to handle (a redirect, a refusal, a node gone)
    if (signal !== this._signal || !signal.joined || this.state === "closed") return;
    const error = signal.closeError;
    if (!this.options.reconnect || (FINAL_CLOSE_CODES.has(code) && !this._closedReconnect)) {
      this._close({ reason: this._closedReason ?? reason ?? "closed", code, error });
      return;
    }
    this._closedReason = undefined;
    this._closedReconnect = false;
    this._reconnect(0);
  }

  _reconnect(attempt) {
    if (this.state === "closed") return;
    if (attempt >= RECONNECT_DELAYS_MS.length) {
      this._close({ reason: "reconnect_failed", code: 0, error: new ConnectionError("could not reconnect") });
      return;
    }
    this.state = "reconnecting";
    const delayMs = RECONNECT_DELAYS_MS[attempt];
    this.emit("reconnecting", { attempt: attempt + 1, delayMs });
    this._reconnectTimer = setTimeout(async () => {
      try {
        await this._join(true);
      } catch (error) {
        if (error instanceof UnauthorizedError || error instanceof ForbiddenError) {
          this._close({ reason: "reconnect_refused", code: 0, error });
        } else {
          this._reconnect(attempt + 1);
        }
        return;
      }
      await this._afterReconnect();
    }, delayMs);
  }

  async _afterReconnect() {
    const resumed = this._signal && this._lastJoinResumed();
    if (!resumed) {
      // A new participant on the server: new transports, publish again what we published.
      this._subscriber?.close();
      this._subscriber = null;
      this._feedIdsByMid = {};
      const feeds = [...this._localFeeds];
      this._publisher?.close();
      this._publisher = null;
      for (const feed of feeds) {
        feed.feedId = null;
        feed.transceiver = null;
      }
      if (feeds.length) {
        // the same tracks on a new publisher connection (its offer needs their m-sections)
        const pc = this._ensurePublisher();
        for (const feed of feeds) {
          const init = { direction: "sendonly", streams: [feed.stream] };
          if (feed.simulcast && feed.kind === "video") {
            init.sendEncodings = SIMULCAST_LAYERS.map((layer) => ({ ...layer }));
          }
          feed.transceiver = pc.addTransceiver(feed.track, init);
        }
        await this._negotiatePublisher().catch((e) => console.warn("sfu: republish failed", e));
      }
      for (const feed of feeds.filter((f) => f.muted)) await feed.mute().catch(() => {});
      for (const feed of this.feeds.values()) {
        feed._subscribing = null;
        if (feed.elements.size && !this.options.autoSubscribe) feed.subscribe().catch(() => {});
      }
    }
    await this._catchUpMessages();
    this.emit("reconnected", { resumed });
  }

  _lastJoinResumed() {
    return this._resumedFlag === true;
  }

  async _catchUpMessages() {
    for (const [pipeline, after] of Object.entries(this._lastSeq)) {
      try {
        const page = await this._signal.request({ type: "history", pipeline, after, limit: 1000 });
        for (const message of page.messages ?? []) this._onMessage(message);
      } catch {
        /* data may not be granted */
      }
    }
  }

  // -- events from the server ----------------------------------------------------------------------------

  _onEvent(msg) {
    switch (msg.type) {
      case "participant_joined": {
        const p = this._addParticipant(msg.participant);
        for (const feed of msg.participant.feeds ?? []) this._addFeed(feed);
        return p;
      }
      case "participant_left":
        return this._removeParticipant(msg.uid, msg.reason);
      case "participant_updated":
        return this._updateParticipant(msg.participant);
      case "feed_published":
        return this._addFeed(msg.feed);
      case "feed_unpublished":
        return this._removeFeed(msg.feed_id);
      case "feed_updated":
        return this._updateFeed(msg.feed);
      case "message":
        return this._onMessage(msg);
      case "active_speakers":
        this.activeSpeakers = msg.speakers ?? [];
        return this.emit("activespeakers", this.activeSpeakers);
      case "offer":
        return this._onSubscriberOffer(msg);
      case "candidate":
        return this._onRemoteCandidate(msg);
      case "layers_wanted":
        return this._onLayersWanted(msg);
      case "data_reset":
        return this.emit("datareset", {
          channel: msg.channel ?? RELIABLE_LABEL,
          reliable: msg.channel !== LOSSY_LABEL,
          dropped: Number.isInteger(msg.dropped) ? msg.dropped : 0,
        });
      case "layer_changed": {
        const feed = this.feeds.get(msg.feed_id);
        const paused = msg.paused === true; // the server paused this video for bandwidth (rid null)
        if (feed) feed.currentLayer = paused ? undefined : (msg.rid ?? undefined);
        return this.emit("layerchanged", { feed, feedId: msg.feed_id, rid: msg.rid, reason: msg.reason, paused });
      }
      case "recording":
        this.recording = msg.state === "started";
        return this.emit("recording", msg);
      case "closed":
        this._closedReason = msg.reason;
        this._closedReconnect = msg.reconnect === true; // e.g. server_shutdown: join again
        return undefined;
      default:
        return undefined;
    }
  }

  _addParticipant(wire) {
    if (wire.uid === this.uid) return null;
    let p = this.participants.get(wire.uid);
    if (p) {
      p._update(wire);
      return p;
    }
    p = new RemoteParticipant(wire);
    this.participants.set(p.uid, p);
    this.emit("participantjoined", p);
    return p;
  }

  _removeParticipant(uid, reason) {
    const p = this.participants.get(uid);
    if (!p) return;
    for (const feedId of [...p.feeds.keys()]) this._removeFeed(feedId);
    this.participants.delete(uid);
    this.emit("participantleft", p, reason);
    p.emit("left", reason);
  }

  _updateParticipant(wire) {
    if (wire.uid === this.uid) {
      this.localParticipant = { ...this.localParticipant, ...wire };
      return;
    }
    const p = this.participants.get(wire.uid);
    if (!p) return;
    p._update(wire);
    this.emit("participantupdated", p);
  }

  _addFeed(wire) {
    if (wire.uid === this.uid || this.feeds.has(wire.feed_id)) return;
    const feed = new RemoteFeed(this, wire);
    this.feeds.set(feed.feedId, feed);
    const owner = this.participants.get(feed.uid) ?? this._addParticipant({ uid: feed.uid, name: feed.uid });
    owner?.feeds.set(feed.feedId, feed);
    const pending = this._pendingTracks.get(feed.feedId);
    if (pending) {
      this._pendingTracks.delete(feed.feedId);
      feed._setTrack(pending.track, pending.receiver);
    }
    this.emit("feedpublished", feed);
    owner?.emit("feedpublished", feed);
  }

  _removeFeed(feedId) {
    const feed = this.feeds.get(feedId);
    this._pendingTracks.delete(feedId);
    if (!feed) return;
    this.feeds.delete(feedId);
    this.participants.get(feed.uid)?.feeds.delete(feedId);
    feed._unpublish();
    this.emit("feedunpublished", feed);
    this.participants.get(feed.uid)?.emit("feedunpublished", feed);
  }

  _updateFeed(wire) {
    const local = [...this._localFeeds].find((f) => f.feedId === wire.feed_id);
    if (local) {
      if (local.muted !== Boolean(wire.muted)) {
        local.muted = Boolean(wire.muted);
        local.track.enabled = !local.muted;
        local.emit(local.muted ? "muted" : "unmuted", local);
      }
      return;
    }
    const feed = this.feeds.get(wire.feed_id);
    if (!feed) return;
    feed._apply(wire);
    feed.emit("updated", feed);
    this.emit("feedupdated", feed);
  }

  _remember(message, emitNew) {
    const pipeline = message.pipeline ?? "default";
    const last = this._lastSeq[pipeline] ?? -1;
    if (message.seq <= last) return false;
    this._lastSeq[pipeline] = message.seq;
    if (emitNew) {
      (this.history[pipeline] ??= []).push(message);
      this.emit("message", message);
    }
    return true;
  }

  _onMessage(message) {
    this._remember(message, true);
  }

  // -- data ----------------------------------------------------------------------------------------------

  /**
   * Sends a JSON message to everyone (or `to`) on a pipeline; resolves with its `seq`.
   * @param {unknown} data
   * @param {{to?: string[], pipeline?: string, persist?: boolean}} [options]
   * @returns {Promise<number>}
   */
  async send(data, { to, pipeline, persist } = {}) {
    const body = { type: "send", data };
    if (to) body.to = to;
    if (pipeline) body.pipeline = pipeline;
    if (persist) body.persist = true;
    const reply = await this._signal.request(body);
    const own = { from: this.uid, pipeline: pipeline ?? "default", seq: reply.seq, ts: Date.now(), data };
    (this.history[own.pipeline] ??= []).push(own);
    return reply.seq;
  }

  /**
   * One page of a pipeline's history, ascending by seq.
   * @param {string} pipeline
   * @param {{before?: number, after?: number, limit?: number}} [page]
   */
  async fetchHistory(pipeline, { before, after, limit } = {}) {
    const body = { type: "history", pipeline };
    if (before !== undefined) body.before = before;
    if (after !== undefined) body.after = after;
    if (limit !== undefined) body.limit = limit;
    return (await this._signal.request(body)).messages;
  }

  /**
   * Sends binary data over the data channels (PROTOCOL.md "Binary data channels") to everyone the
   * policy allows, or to `to`. `reliable` (default) is ordered and retransmitted; otherwise unordered
   * with no retransmission, and dropped (here while the browser buffers over 256 KiB, on the server
   * when a recipient is congested). There is no reply:
   * what the server refuses (grants.data, policy.message) is dropped and counted there. The first call
   * opens the channels on the publisher transport (a negotiation). Rejects with TooLargeError over
   * 15 KiB; a string is sent as its UTF-8 bytes.
   * @param {ArrayBuffer | ArrayBufferView | string} data
   * @param {{reliable?: boolean, to?: string[], topic?: string}} [options]
   * @returns {Promise<void>}
   */
  async publishData(data, { reliable = true, to, topic } = {}) {
    if (this.state === "closed") throw new ConflictError("session is closed");
    const payload = bytesOf(data);
    if (payload.length > MAX_DATA_PAYLOAD_BYTES) {
      throw new TooLargeError(`data payload is ${payload.length} bytes, at most ${MAX_DATA_PAYLOAD_BYTES}`);
    }
    const header = {};
    if (to != null) header.to = [...to];
    if (topic != null) header.topic = String(topic);
    const wire = encodeDataMessage(payload, header);
    const channels = await this._dataChannels();
    const channel = reliable ? channels.reliable : channels.lossy;
    if (reliable && channel.bufferedAmount > DATA_HIGH_WATER_BYTES) await drained(channel);
    if (channel.readyState !== "open") throw new ConnectionError(`data channel ${channel.label} is ${channel.readyState}`);
    if (!reliable && channel.bufferedAmount > DATA_LOW_WATER_BYTES) return; // lossy: dropped while congested
    channel.send(wire);
  }

  /**
   * Opens the data channels now rather than on the first `publishData`, so that the first lossy
   * messages are not dropped while the server opens its channels towards the others.
   * @returns {Promise<void>}
   */
  async openData() {
    if (this.state === "closed") throw new ConflictError("session is closed");
    await this._dataChannels();
  }

  /** The publisher's `reliable` and `lossy` channels, opened (with a negotiation) on first use. */
  async _dataChannels() {
    const current = this._data;
    if (current && current.pc === this._publisher && current.reliable.readyState !== "closed"
      && current.reliable.readyState !== "closing") {
      await current.ready;
      return current;
    }
    const pc = this._ensurePublisher();
    const reliable = pc.createDataChannel(RELIABLE_LABEL, { ordered: true });
    const lossy = pc.createDataChannel(LOSSY_LABEL, { ordered: false, maxRetransmits: 0 });
    reliable.bufferedAmountLowThreshold = DATA_LOW_WATER_BYTES;
    const entry = { pc, reliable, lossy, ready: null };
    entry.ready = (async () => {
      await this._negotiatePublisher();
      await Promise.all([opened(reliable), opened(lossy)]);
    })();
    this._data = entry;
    try {
      await entry.ready;
    } catch (error) {
      if (this._data === entry) this._data = null; // the next call opens them again
      reliable.close();
      lossy.close();
      throw error;
    }
    return entry;
  }

  /** A channel the server opened on the subscriber transport: its messages become `data` events. */
  _onDataChannel(channel) {
    if (channel.label !== RELIABLE_LABEL && channel.label !== LOSSY_LABEL) return;
    const reliable = channel.label === RELIABLE_LABEL;
    channel.binaryType = "arraybuffer";
    channel.onmessage = ({ data }) => {
      const message = decodeDataMessage(data);
      if (message) this.emit("data", { ...message, reliable });
    };
  }

  /** Changes this participant's display name. @param {string} name */
  async setName(name) {
    await this._signal.request({ type: "update", name });
    if (this.localParticipant) this.localParticipant.name = name;
  }

  // -- publishing ----------------------------------------------------------------------------------------

  /**
   * Captures and publishes the camera (1280x720 by default); with `simulcast`, three encodings
   * q, h, f at 1/4, 1/2 and full size.
   * @param {{simulcast?: boolean, width?: number, height?: number, frameRate?: number,
   *          deviceId?: string, name?: string, track?: MediaStreamTrack}} [options]
   * @returns {Promise<LocalFeed>}
   */
  async publishCamera({ simulcast = false, width = 1280, height = 720, frameRate = 30, deviceId, name, track } = {}) {
    if (!track) {
      const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } };
      if (deviceId) video.deviceId = { exact: deviceId };
      track = await this.#capture({ video }, "camera");
    }
    return this.#publish([new LocalFeed(this, { track, source: "camera", name: name ?? "camera", simulcast })])
      .then(([feed]) => feed);
  }

  /**
   * Captures and publishes the microphone.
   * @param {{deviceId?: string, name?: string, track?: MediaStreamTrack}} [options]
   * @returns {Promise<LocalFeed>}
   */
  async publishMicrophone({ deviceId, name, track } = {}) {
    if (!track) {
      const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
      if (deviceId) audio.deviceId = { exact: deviceId };
      track = await this.#capture({ audio }, "microphone");
    }
    return this.#publish([new LocalFeed(this, { track, source: "microphone", name: name ?? "microphone" })])
      .then(([feed]) => feed);
  }

  /**
   * Captures and publishes a screen, window or tab, with its audio where the browser offers it
   * (`feed.audioFeed`). Call it from a user gesture.
   * @param {{audio?: boolean, frameRate?: number, name?: string}} [options]
   * @returns {Promise<LocalFeed>}
   */
  async publishScreen({ audio = true, frameRate = 15, name } = {}) {
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: frameRate } }, audio });
    } catch (error) {
      throw captureError(error, "screen");
    }
    const [videoTrack] = stream.getVideoTracks();
    const [audioTrack] = stream.getAudioTracks();
    if ("contentHint" in videoTrack) videoTrack.contentHint = "detail";
    const screen = new LocalFeed(this, { track: videoTrack, source: "screen", name: name ?? "screen" });
    const feeds = [screen];
    if (audioTrack) {
      screen.audioFeed = new LocalFeed(this, { track: audioTrack, source: "screen_audio", name: "screen audio" });
      feeds.push(screen.audioFeed);
    }
    await this.#publish(feeds);
    return screen;
  }

  async #capture(constraints, what) {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new PermissionDeniedError(`the ${what} needs a secure context (https or localhost)`);
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      return stream.getTracks()[0];
    } catch (error) {
      throw captureError(error, what);
    }
  }

  async #publish(feeds) {
    if (this.state === "closed") throw new ConflictError("session is closed");
    const pc = this._ensurePublisher();
    for (const feed of feeds) {
      const init = { direction: "sendonly", streams: [feed.stream] };
      if (feed.simulcast && feed.kind === "video") {
        init.sendEncodings = SIMULCAST_LAYERS.map((layer) => ({ ...layer }));
      }
      feed.transceiver = pc.addTransceiver(feed.track, init);
      this._localFeeds.add(feed);
    }
    try {
      await this._negotiatePublisher();
    } catch (error) {
      for (const feed of feeds) this.#dropLocal(feed);
      throw error;
    }
    return feeds;
  }

  _ensurePublisher() {
    if (this._publisher) return this._publisher;
    const pc = new RTCPeerConnection(this._rtcConfig());
    pc.__trickle = false;
    pc.onicecandidate = ({ candidate }) => {
      if (!pc.__trickle) return;
      this._signal?.notify({ type: "candidate", transport: "publisher", candidate: candidateWire(candidate) });
    };
    pc.onconnectionstatechange = () => this.emit("publisherstate", pc.connectionState);
    this._publisher = pc;
    return pc;
  }

  _rtcConfig() {
    const relay = this.options.forceRelay || this.localParticipant?.grants?.force_relay === true;
    return {
      iceServers: this.iceServers,
      iceTransportPolicy: relay ? "relay" : "all",
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    };
  }

  /** One publisher negotiation at a time: offer with every live feed, apply the answer. */
  _negotiatePublisher() {
    const run = async () => {
      const pc = this._ensurePublisher();
      pc.__trickle = false;
      await pc.setLocalDescription(await pc.createOffer());
      await waitForGathering(pc, GATHER_WAIT_MS);
      const live = [...this._localFeeds].filter((f) => f.transceiver?.mid != null);
      const published = await this._signal.request({
        type: "publish",
        sdp: pc.localDescription.sdp,
        feeds: live.map((f) => ({ mid: f.transceiver.mid, source: f.source, name: f.name })),
      });
      await pc.setRemoteDescription({ type: "answer", sdp: published.sdp });
      pc.__trickle = pc.iceGatheringState !== "complete";
      for (const { mid, feed_id: feedId } of published.feeds ?? []) {
        const feed = live.find((f) => f.transceiver.mid === mid);
        if (feed) feed.feedId = feedId;
      }
      for (const feed of live) {
        if (feed.feedId && feed.muted) {
          this._signal.request({ type: "mute", feed_id: feed.feedId, muted: true }).catch(() => {});
        }
      }
    };
    this._publishChain = this._publishChain.catch(() => {}).then(run);
    return this._publishChain;
  }

  async _unpublish(feed) {
    if (!this._localFeeds.delete(feed)) return;
    feed.track.stop();
    const feedId = feed.feedId;
    this.#dropLocal(feed);
    if (feedId && this.state !== "closed") {
      await this._signal.request({ type: "unpublish", feed_id: feedId }).catch((error) => {
        if (!(error instanceof NotFoundError)) throw error;
      });
    }
  }

  #dropLocal(feed) {
    this._localFeeds.delete(feed);
    const transceiver = feed.transceiver;
    if (transceiver && this._publisher?.signalingState !== "closed") {
      transceiver.sender.replaceTrack(null).catch(() => {});
      try {
        transceiver.direction = "inactive";
      } catch {
        /* the transceiver is stopped */
      }
    }
  }

  _onLayersWanted(msg) {
    if (!this.options.dynacast) return;
    const feed = [...this._localFeeds].find((f) => f.feedId === msg.feed_id);
    feed?._applyLayersWanted(msg.rids ?? []).catch((error) => console.warn("sfu: dynacast failed", error));
  }

  // -- subscribing ---------------------------------------------------------------------------------------

  _ensureSubscriber() {
    if (this._subscriber) return this._subscriber;
    const pc = new RTCPeerConnection(this._rtcConfig());
    pc.__trickle = false;
    pc.onicecandidate = ({ candidate }) => {
      if (!pc.__trickle) return;
      this._signal?.notify({ type: "candidate", transport: "subscriber", candidate: candidateWire(candidate) });
    };
    pc.ontrack = (event) => this._onTrack(event);
    pc.ondatachannel = ({ channel }) => this._onDataChannel(channel);
    pc.onconnectionstatechange = () => this.emit("subscriberstate", pc.connectionState);
    this._subscriber = pc;
    return pc;
  }

  /** Server offers are answered strictly in order, one at a time. */
  _onSubscriberOffer(msg) {
    this._subscriberChain = this._subscriberChain.then(async () => {
      const pc = this._ensureSubscriber();
      Object.assign(this._feedIdsByMid, msg.feeds ?? {});
      pc.__trickle = false;
      await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitForGathering(pc, GATHER_WAIT_MS);
      this._signal.notify({ type: "answer", negotiation: msg.negotiation, sdp: pc.localDescription.sdp });
      pc.__trickle = pc.iceGatheringState !== "complete";
    }).catch((error) => console.error("sfu: subscriber negotiation failed", error));
  }

  _onTrack(event) {
    const mid = event.transceiver?.mid;
    const feedId = this._feedIdsByMid[mid] ?? event.streams?.[0]?.id;
    if (!feedId) return;
    // The server reuses an m-section that went inactive for a later feed (same transceiver, hence the
    // same receiver and track object, new SSRC): the feed that had this receiver before loses it.
    for (const other of this.feeds.values()) {
      if (other.feedId !== feedId && other.receiver === event.receiver) other._releaseTrack();
    }
    for (const [id, pending] of this._pendingTracks) {
      if (id !== feedId && pending.receiver === event.receiver) this._pendingTracks.delete(id);
    }
    const feed = this.feeds.get(feedId);
    if (feed) {
      feed._subscribing ??= Promise.resolve();
      feed._setTrack(event.track, event.receiver);
    } else {
      this._pendingTracks.set(feedId, { track: event.track, receiver: event.receiver });
    }
  }

  async _onRemoteCandidate(msg) {
    const pc = msg.transport === "publisher" ? this._publisher : this._subscriber;
    if (!pc || !msg.candidate) return;
    try {
      await pc.addIceCandidate(msg.candidate.candidate ? msg.candidate : null);
    } catch (error) {
      console.warn("sfu: remote candidate rejected", error);
    }
  }
}

/** Resolves when a data channel opens; rejects if it closes first or does not open in time. */
function opened(channel) {
  if (channel.readyState === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new ConnectionError(`data channel ${channel.label} did not open`)),
      REQUEST_TIMEOUT_MS);
    const finish = (error) => {
      clearTimeout(timer);
      channel.removeEventListener("open", onOpen);
      channel.removeEventListener("close", onClose);
      if (error) reject(error);
      else resolve();
    };
    const onOpen = () => finish();
    const onClose = () => finish(new ConnectionError(`data channel ${channel.label} closed`));
    channel.addEventListener("open", onOpen);
    channel.addEventListener("close", onClose);
  });
}

/** Resolves when a channel's send buffer runs low again (or it closes). */
function drained(channel) {
  return new Promise((resolve) => {
    const done = () => {
      channel.removeEventListener("bufferedamountlow", done);
      channel.removeEventListener("close", done);
      resolve();
    };
    channel.addEventListener("bufferedamountlow", done);
    channel.addEventListener("close", done);
  });
}

function candidateWire(candidate) {
  if (!candidate) return { candidate: "", sdpMid: null, sdpMLineIndex: null };
  return { candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex };
}

export default Session;
