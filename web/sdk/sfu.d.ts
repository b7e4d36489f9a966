// Types of the browser SDK (sfu.js). Wire shapes follow PROTOCOL.md.

export declare const SDK_NAME: string;
export declare const SDK_VERSION: string;

/** Every error of the SDK; `code` is a PROTOCOL.md wire code or one of the SDK's own codes. */
export declare class SfuError extends Error {
  constructor(message: string, code?: string);
  readonly code: WireErrorCode | SdkErrorCode | string;
  static code: string;
}
export type WireErrorCode =
  | "bad_request" | "unauthorized" | "forbidden" | "not_found" | "conflict" | "too_large" | "rate_limited" | "unavailable"
  | "internal";
export type SdkErrorCode = "connection_failed" | "permission_denied" | "device_not_found" | "capture_failed";

export declare class BadRequestError extends SfuError {}
export declare class UnauthorizedError extends SfuError {}
export declare class ForbiddenError extends SfuError {}
export declare class NotFoundError extends SfuError {}
export declare class ConflictError extends SfuError {}
export declare class TooLargeError extends SfuError {}
export declare class RateLimitedError extends SfuError {}
/** The server is at capacity for a new session: try again later. */
export declare class UnavailableError extends SfuError {}
export declare class InternalError extends SfuError {}
export declare class ConnectionError extends SfuError {}
/** Nodes kept redirecting the join (`closed {reason:"redirect"}`, close 4014) more than 3 times in a row. */
export declare class TooManyRedirectsError extends SfuError {}
export declare class PermissionDeniedError extends SfuError {}
export declare class DeviceNotFoundError extends SfuError {}

/** The typed error of a wire `error` frame. */
export declare function errorFromWire(frame: { code?: string; message?: string }): SfuError;

export declare class Emitter {
  on(event: string, listener: (...args: any[]) => void): this;
  off(event: string, listener: (...args: any[]) => void): this;
  once(event: string, listener: (...args: any[]) => void): this;
}

export type Source = "camera" | "microphone" | "screen" | "screen_audio" | "custom";
export type Rid = "q" | "h" | "f";

/** One simulcast layer of `feed.layers` (PROTOCOL.md `<feed>`); null where the publisher did not say. */
export interface Layer {
  rid: string; width: number | null; height: number | null; max_bitrate: number | null;
  /** Bits per second the server measured for this layer when the layer list last changed (null: not yet). */
  bitrate: number | null;
}

export interface WireFeed {
  feed_id: string; uid: string; kind: "audio" | "video"; source: Source; name: string; muted: boolean;
  codec: string; layers: Layer[];
}

export interface Message {
  from: string; pipeline: string; seq: number; ts: number; data: unknown;
}

export interface Speaker { uid: string; level: number }

/** Summarized stats of one sender or receiver, since the previous `getStats()` call. */
export interface FeedStats {
  direction: "inbound" | "outbound";
  packets: number;
  packetsLost: number;
  lossRate: number;
  bitrateBps: number;
  framesDecoded?: number;
  framesEncoded?: number;
  frameWidth?: number;
  frameHeight?: number;
  jitterMs?: number;
  rttMs?: number;
  stalled: boolean;
}

export type ConnectionQuality = "excellent" | "good" | "poor" | "lost" | "unknown";
export declare function connectionQuality(stats: FeedStats | null): ConnectionQuality;

export declare class RemoteParticipant extends Emitter {
  readonly uid: string;
  name: string;
  description: Record<string, unknown>;
  /** Feeds by feedId. */
  readonly feeds: Map<string, RemoteFeed>;
  on(event: "updated", listener: (p: RemoteParticipant) => void): this;
  on(event: "feedpublished" | "feedunpublished", listener: (feed: RemoteFeed) => void): this;
  on(event: "left", listener: (reason: string) => void): this;
}

export interface QualityRequest { maxWidth?: number; maxHeight?: number; layer?: Rid; paused?: boolean }

/** A feed published by someone else. */
export declare class RemoteFeed extends Emitter {
  readonly feedId: string;
  readonly uid: string;
  readonly kind: "audio" | "video";
  readonly source: Source;
  name: string;
  muted: boolean;
  codec: string;
  layers: Layer[];
  /** The rid the server last reported forwarding (`layer_changed`); undefined while paused for bandwidth. */
  currentLayer?: string;
  track: MediaStreamTrack | null;
  receiver: RTCRtpReceiver | null;
  readonly elements: Set<HTMLMediaElement>;
  unpublished: boolean;
  readonly participant: RemoteParticipant | undefined;
  /** Asks the server to forward this feed (idempotent). */
  subscribe(): Promise<void>;
  unsubscribe(): Promise<void>;
  /** Subscribes and plays in `element` (created when omitted); detached automatically on unpublish. */
  attach<E extends HTMLMediaElement = HTMLMediaElement>(element?: E): Promise<E>;
  detach(element?: HTMLMediaElement): void;
  setQuality(request: QualityRequest): Promise<void>;
  getStats(): Promise<FeedStats | null>;
  on(event: "updated" | "unpublished", listener: (feed: RemoteFeed) => void): this;
  on(event: "track", listener: (track: MediaStreamTrack) => void): this;
}

/** A feed this page publishes. */
export declare class LocalFeed extends Emitter {
  feedId: string | null;
  readonly track: MediaStreamTrack;
  readonly kind: "audio" | "video";
  readonly source: Source;
  readonly name: string;
  readonly simulcast: boolean;
  muted: boolean;
  readonly stream: MediaStream;
  transceiver: RTCRtpTransceiver | null;
  /** The screen share's audio, published with it. */
  audioFeed: LocalFeed | null;
  /** Dynacast: the rids the server last said someone receives. */
  layersWanted: string[] | null;
  mute(): Promise<void>;
  unmute(): Promise<void>;
  unpublish(): Promise<void>;
  /** A muted local preview. */
  attach<E extends HTMLMediaElement>(element: E): E;
  getStats(): Promise<FeedStats | null>;
  on(event: "muted" | "unmuted" | "ended", listener: (feed: LocalFeed) => void): this;
  on(event: "layerswanted", listener: (rids: string[]) => void): this;
}

export interface ConnectOptions {
  /** The server: `https://sfu.example.com` or `ws://127.0.0.1:7880/v1/rtc`. */
  url: string;
  /** A join JWT... */
  token?: string;
  /** ...or a web-only key (`wk_...`) with session, uid and name. */
  key?: string;
  session?: string;
  uid?: string;
  name?: string;
  /** Receive every allowed feed without asking (default true). */
  autoSubscribe?: boolean;
  /** Size and pause video by the attached elements (default true). */
  adaptiveStream?: boolean;
  /** Stop encoding simulcast layers nobody receives (default true). */
  dynacast?: boolean;
  /** ICE through TURN only (also when the grants say `force_relay`). */
  forceRelay?: boolean;
  /** Resume after a lost connection with backoff (default true). */
  reconnect?: boolean;
}

export interface CameraOptions {
  /** Three encodings q, h, f at 1/4, 1/2 and full size. */
  simulcast?: boolean;
  width?: number;
  height?: number;
  frameRate?: number;
  deviceId?: string;
  name?: string;
  /** Publish this track instead of capturing one. */
  track?: MediaStreamTrack;
}

export interface SendOptions { to?: string[]; pipeline?: string; persist?: boolean }

export interface PublishDataOptions {
  /** Ordered and retransmitted (default true); false: unordered, no retransmission, dropped under congestion. */
  reliable?: boolean;
  /** Recipients' uids; absent: everyone the sender's `policy.message` allows. */
  to?: string[];
  topic?: string;
}

/** A binary data-channel message from another participant. */
export interface DataEvent { from: string; topic: string | null; payload: ArrayBuffer; reliable: boolean }

/** The server fell behind sending to this page and replaced the channel, dropping `dropped` queued messages. */
export interface DataResetEvent { channel: "reliable" | "lossy" | string; reliable: boolean; dropped: number }

export interface DisconnectedEvent { reason: string; code: number; error?: SfuError }

export declare class Session extends Emitter {
  /** Joins a session. Rejects with a typed SfuError (e.g. ForbiddenError "origin not allowed"). */
  static connect(options: ConnectOptions): Promise<Session>;
  readonly sid: string;
  readonly cid: string;
  readonly uid: string;
  localParticipant: { uid: string; name: string; description: Record<string, unknown>; grants: Record<string, unknown> } | null;
  readonly participants: Map<string, RemoteParticipant>;
  readonly feeds: Map<string, RemoteFeed>;
  /** `joined.history` plus what arrived since, by pipeline. */
  readonly history: Record<string, Message[]>;
  activeSpeakers: Speaker[];
  state: "connecting" | "connected" | "reconnecting" | "closed";
  recording: boolean;
  iceServers: RTCIceServer[];
  readonly localFeeds: LocalFeed[];
  /**
   * Where the socket joined: `options.url` (as a ws(s) URL), or the node a multi-node `--redirect`
   * server sent the join to; rejoins go there first and back to `options.url` if it is unreachable.
   */
  readonly nodeUrl: string;

  publishCamera(options?: CameraOptions): Promise<LocalFeed>;
  publishMicrophone(options?: { deviceId?: string; name?: string; track?: MediaStreamTrack }): Promise<LocalFeed>;
  /** Screen, window or tab, with its audio where the browser offers it (`feed.audioFeed`). */
  publishScreen(options?: { audio?: boolean; frameRate?: number; name?: string }): Promise<LocalFeed>;
  /** Resolves with the message's seq. */
  send(data: unknown, options?: SendOptions): Promise<number>;
  /**
   * Binary data over the data channels (at most 15 KiB; a string is sent as UTF-8). The first call opens
   * the channels on the publisher transport. Rejects with TooLargeError over the limit.
   */
  publishData(data: ArrayBuffer | ArrayBufferView | string, options?: PublishDataOptions): Promise<void>;
  /** Opens the data channels now (publishData does it on first use), e.g. right after joining. */
  openData(): Promise<void>;
  fetchHistory(pipeline: string, page?: { before?: number; after?: number; limit?: number }): Promise<Message[]>;
  setName(name: string): Promise<void>;
  leave(): Promise<void>;

  /** Also called at once for participants already present. */
  on(event: "participantjoined", listener: (p: RemoteParticipant) => void): this;
  on(event: "participantleft", listener: (p: RemoteParticipant, reason: string) => void): this;
  on(event: "participantupdated", listener: (p: RemoteParticipant) => void): this;
  /** Also called at once for feeds already published. */
  on(event: "feedpublished" | "feedunpublished" | "feedupdated", listener: (feed: RemoteFeed) => void): this;
  on(event: "message", listener: (message: Message) => void): this;
  on(event: "data", listener: (event: DataEvent) => void): this;
  on(event: "datareset", listener: (event: DataResetEvent) => void): this;
  on(event: "activespeakers", listener: (speakers: Speaker[]) => void): this;
  on(event: "recording", listener: (event: { state: "started" | "stopped"; recording_id: string }) => void): this;
  /** `paused`: the server paused this video because even its lowest layer does not fit the bandwidth
   *  (`rid` null, reason "bandwidth"); the next event with `paused` false names the layer it resumes on. */
  on(event: "layerchanged", listener: (event: { feed?: RemoteFeed; feedId: string; rid: string | null; reason: string; paused: boolean }) => void): this;
  on(event: "reconnecting", listener: (event: { attempt: number; delayMs: number }) => void): this;
  on(event: "reconnected", listener: (event: { resumed: boolean }) => void): this;
  on(event: "disconnected", listener: (event: DisconnectedEvent) => void): this;
  on(event: "publisherstate" | "subscriberstate", listener: (state: RTCPeerConnectionState) => void): this;
  on(event: string, listener: (...args: any[]) => void): this;
}

export default Session;
