// The bare PROTOCOL.md client the raw test pages share (no SDK): one socket, requests matched to replies
// by `re`, other messages to `onEvent` and to per-type `handlers`, a ping every 5 s.

export function waitGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

export async function connect(wsUrl, token, onEvent = () => {}) {
  const ws = new WebSocket(wsUrl);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const pending = new Map();
  const handlers = {};
  let nextId = 1;
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.re !== undefined && pending.has(msg.re)) {
      const { resolve, reject } = pending.get(msg.re);
      pending.delete(msg.re);
      (msg.type === "error" ? reject(new Error(msg.code + ": " + msg.message)) : resolve(msg));
      return;
    }
    onEvent(msg);
    if (handlers[msg.type]) handlers[msg.type](msg);
  };
  const request = (body) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ ...body, id }));
  });
  const pinger = setInterval(() => ws.send(JSON.stringify({ type: "ping" })), 5000);
  const joined = await request({ type: "join", token });
  return { ws, request, handlers, joined, pinger };
}

// The subscriber side: answers the server's offers one at a time, in order (one negotiation at a time).
export function answerOffers(peer, pc) {
  let chain = Promise.resolve();
  peer.handlers.offer = (msg) => {
    chain = chain.then(async () => {
      await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitGathering(pc);
      peer.ws.send(JSON.stringify({ type: "answer", negotiation: msg.negotiation, sdp: pc.localDescription.sdp }));
    });
  };
}
