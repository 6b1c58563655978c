// skymix.js: live rooms recorded by skymix (docs/live.md, "JavaScript API").
//
// A plain ES module, no build step. One WebSocket per page to the service (/rest/live/ws) for the
// room's peers and its recording's states; media through the service's Janus videoroom with
// Janus's own janus.js (and the webrtc-adapter it needs), served by the service at /vendor/.
//
//   import { Skymix, RECORDING_STATE } from "https://skymix.example/skymix.js";
//   const skymix = new Skymix({ server: "https://skymix.example" });
//   await skymix.init("pk_...");              // an application's public key or a room token
//   skymix.on("recordingState", (state, recordingId, url, error) => { ... });
//   await skymix.joinRoom("standup", { name: "Ada", localVideo: document.querySelector("video") });
//   await skymix.startRecording();

/** The states a recording goes through, as `recordingState` events give them. */
export const RECORDING_STATE = Object.freeze({
  START: "START",
  STOP: "STOP",
  LINK: "LINK",
  ERROR: "ERROR",
});

/** What went wrong: `code` is stable ("unauthorized", "room_full", "connection_closed", ...). */
export class SkymixError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = "SkymixError";
    this.code = code;
    Object.assign(this, details);
  }
}

const EVENTS = ["recordingState", "peerJoined", "peerLeft", "remoteTrack", "localStream", "error"];

// The WebSocket's close codes the service uses, and what they mean to the page.
const CLOSE_CODES = {
  4401: ["unauthorized", "the key or room token was refused"],
  4403: ["origin_not_allowed", "this page's origin is not allowed for the application"],
  4408: ["hello_timeout", "the service got no hello in time"],
  4409: ["service_stopping", "the service is stopping"],
  4429: ["too_many_attempts", "too many refused attempts from this address: wait a minute"],
};

const HELLO_TIMEOUT_MS = 15000;

// How long a start or stop waits for its answer before it rejects with "timeout" (the service
// answers at once; a hung service must not leave the page waiting for ever).
const RECORDING_TIMEOUT_MS = 60000;

// The service's `error` messages that can answer a start or stop (it answers a refused one
// with recordingState ERROR; its internal_error names the request: "start failed"), and those
// that answer none of join's questions.
function recordingError(type, error) {
  return (
    error.code === "not_joined" ||
    (error.code === "internal_error" && error.message === `${type} failed`)
  );
}
const NOT_JOIN_ERRORS = new Set([
  "bad_message",
  "unknown_type",
  "already_welcomed",
  "janusId_invalid",
  "not_joined",
]);

// A recordingState the service sends only to the page that asked: a refused start or stop.
function refusal(message) {
  return message.state === RECORDING_STATE.ERROR && (message.recordingId ?? null) === null;
}

// Janus's scripts, loaded once per page as classic scripts: janus.js reads a global `adapter`.
let vendorReady = null;

function loadScript(url) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.async = false;
    script.onload = () => resolve();
    script.onerror = () => reject(new SkymixError("vendor_unavailable", `could not load ${url}`));
    document.head.appendChild(script);
  });
}

function loadVendor(server) {
  if (vendorReady === null) {
    vendorReady = (async () => {
      if (globalThis.adapter === undefined) await loadScript(`${server}/vendor/adapter.js`);
      if (globalThis.Janus === undefined) await loadScript(`${server}/vendor/janus.js`);
      const Janus = globalThis.Janus;
      await new Promise((resolve) =>
        Janus.init({
          debug: false,
          dependencies: Janus.useDefaultDependencies({ adapter: globalThis.adapter }),
          callback: resolve,
        }),
      );
      return Janus;
    })();
    vendorReady.catch(() => {
      vendorReady = null; // a later init tries again
    });
  }
  return vendorReady;
}

function janusError(context, cause) {
  const text = typeof cause === "string" ? cause : cause?.message ?? JSON.stringify(cause);
  return new SkymixError("media_failed", `${context}: ${text}`);
}

/** A page's connection to skymix live rooms. */
export class Skymix {
  /** `server`: the skymix service's URL; default: this page's origin. */
  constructor({ server } = {}) {
    this.server = (server ?? globalThis.location.origin).replace(/\/+$/, "");
    this.appId = null;
    this.peerId = null;
    this.room = null;
    this._handlers = new Map(EVENTS.map((name) => [name, new Set()]));
    this._socket = null;
    this._waiters = [];
    this._closing = false;
    this._call = null; // the Janus side of the room: session, handles, feeds
    this._peers = new Map(); // peerId -> name
    this._refusal = null; // why the service refused the hello, before it closes
    this._recordingId = null; // the room's running recording, as START (or joined) told
  }

  /** The other peers in the room now: `[{peerId, name}]`. */
  get peers() {
    return [...this._peers].map(([peerId, name]) => ({ peerId, name }));
  }

  /** Add `handler` for `event`; returns the handler (for `off`). */
  on(event, handler) {
    this._handlersOf(event).add(handler);
    return handler;
  }

  /** Remove `handler` from `event`. */
  off(event, handler) {
    this._handlersOf(event).delete(handler);
  }

  /** Connect to the service with an application's public key (`pk_...`) or a room token
   * (`skr_...`), and load janus.js. Resolves with `{appId, room}` (room: a token's, else null). */
  async init(appKeyOrToken) {
    if (this._socket !== null) throw new SkymixError("already_initialized", "init was called already");
    if (typeof appKeyOrToken !== "string" || appKeyOrToken === "") {
      throw new SkymixError("unauthorized", "init needs a public key or a room token");
    }
    const vendor = loadVendor(this.server);
    const url = new URL("/rest/live/ws", this.server);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    this._socket = socket;
    this._closing = false;
    const welcome = this._expect(["welcome"], HELLO_TIMEOUT_MS);
    socket.onopen = () => socket.send(JSON.stringify({ type: "hello", key: appKeyOrToken }));
    socket.onmessage = (event) => this._receive(event.data);
    socket.onclose = (event) => this._closed(event);
    try {
      const message = await welcome;
      await vendor;
      this.appId = message.appId;
      return { appId: message.appId, room: message.room ?? null };
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /** Join `room` as `name`: publish the camera and microphone (as `audio`/`video` ask), show
   * them in `localVideo` when given, and receive every other peer's tracks (`remoteTrack`).
   * Resolves with `{peerId, room, peers, recording}` once this page publishes. */
  async joinRoom(room, { name, localVideo = null, audio = true, video = true } = {}) {
    this._requireSocket();
    if (this.room !== null) throw new SkymixError("already_joined", `already in room ${this.room}`);
    const joined = this._expect(
      ["joined"],
      0,
      () => true,
      (error) => !NOT_JOIN_ERRORS.has(error.code),
    );
    this._send({ type: "join", room, name });
    const message = await joined;
    this.peerId = message.peerId;
    this.room = message.room;
    this._peers = new Map(message.peers.map((peer) => [peer.peerId, peer.name]));
    this._recordingId = message.recording?.recordingId ?? null;
    const Janus = await loadVendor(this.server);
    const call = {
      janus: null,
      publisher: null,
      janusId: null,
      privateId: null,
      feeds: new Map(), // janus id -> {handle, name, tracks: Map(mid -> track)}
      localStream: new MediaStream(),
      localVideo,
      info: message.janus,
      name,
      left: false,
    };
    this._call = call;
    if (message.recording) {
      this._emit("recordingState", message.recording.state, message.recording.recordingId,
        null, null, null);
    }
    try {
      call.janus = await this._session(Janus, call);
      await this._publish(Janus, call, { audio, video });
    } catch (error) {
      await this.leaveRoom();
      throw error;
    }
    return {
      peerId: this.peerId,
      room: this.room,
      peers: message.peers.map((peer) => ({ peerId: peer.peerId, name: peer.name })),
      recording: message.recording ?? null,
    };
  }

  /** Leave the room: stop publishing and receiving, tell the service. The socket stays open
   * for another `joinRoom`. */
  async leaveRoom() {
    const call = this._call;
    this._call = null;
    if (this.room !== null && this._socket?.readyState === WebSocket.OPEN) {
      this._send({ type: "leave" });
    }
    this.room = null;
    this.peerId = null;
    this._recordingId = null;
    this._peers.clear();
    if (call === null) return;
    call.left = true;
    for (const janusId of [...call.feeds.keys()]) this._dropFeed(call, janusId);
    for (const track of call.localStream.getTracks()) track.stop();
    if (call.janus !== null) {
      await new Promise((resolve) => call.janus.destroy({ success: resolve, error: resolve }));
    }
  }

  /** Ask the service to start recording the room. Resolves with the `recordingState` that
   * answers: the next START (the room records now, whoever asked first), or the ERROR the
   * service sends only to this page (`recordingId` null: refused, with the reason). An earlier
   * recording's ERROR (its job failed) is not an answer. */
  startRecording() {
    return this._recordingRequest(
      "start",
      (m) => m.state === RECORDING_STATE.START || refusal(m),
    );
  }

  /** Ask the service to stop the room's recording. Resolves with the `recordingState` that
   * answers: STOP of the recording that runs, or the ERROR sent only to this page (`recordingId`
   * null: nothing to stop). LINK (or ERROR with its id) follows as a `recordingState` event. */
  stopRecording() {
    return this._recordingRequest(
      "stop",
      (m) =>
        (m.state === RECORDING_STATE.STOP &&
          (this._recordingId === null || m.recordingId === this._recordingId)) ||
        refusal(m),
    );
  }

  /** Leave any room and close the connection to the service. */
  close() {
    if (this._call !== null) this.leaveRoom();
    this._closing = true;
    const socket = this._socket;
    this._socket = null;
    if (socket !== null && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  }

  // --- the service's socket ---

  _handlersOf(event) {
    const handlers = this._handlers.get(event);
    if (handlers === undefined) throw new SkymixError("unknown_event", `no event ${event}`);
    return handlers;
  }

  _emit(event, ...args) {
    for (const handler of [...this._handlers.get(event)]) {
      try {
        handler(...args);
      } catch (error) {
        // a page's handler failing must not stop the others (nor skymix)
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  _requireSocket() {
    if (this._socket === null || this._socket.readyState !== WebSocket.OPEN) {
      throw new SkymixError("not_connected", "call init first (or again: the connection closed)");
    }
  }

  _send(message) {
    this._socket.send(JSON.stringify(message));
  }

  // The next message of one of `types` that `accept`s; an "error" message rejects it when
  // `answers(error)` says the error is the answer; `timeoutMs` bounds it.
  _expect(types, timeoutMs = 0, accept = () => true, answers = () => true) {
    return new Promise((resolve, reject) => {
      const waiter = { types, accept, answers, resolve, reject, timer: null };
      if (timeoutMs > 0) {
        waiter.timer = setTimeout(() => {
          this._waiters = this._waiters.filter((w) => w !== waiter);
          reject(new SkymixError("timeout", `no answer from the service (${types.join(", ")})`));
        }, timeoutMs);
      }
      this._waiters.push(waiter);
    });
  }

  _settle(predicate, settle) {
    const waiter = this._waiters.find(predicate);
    if (waiter === undefined) return false;
    this._waiters = this._waiters.filter((w) => w !== waiter);
    clearTimeout(waiter.timer);
    settle(waiter);
    return true;
  }

  _recordingRequest(type, accept) {
    this._requireSocket();
    if (this.room === null) {
      return Promise.reject(new SkymixError("not_joined", "join a room first"));
    }
    const answer = this._expect(["recordingState"], RECORDING_TIMEOUT_MS, accept, (error) =>
      recordingError(type, error),
    );
    this._send({ type });
    return answer.then((m) => ({
      state: m.state,
      recordingId: m.recordingId ?? null,
      url: m.url ?? null,
      error: m.error ?? null,
      reason: m.reason ?? null,
    }));
  }

  _receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this._emit("error", new SkymixError("bad_message", "the service sent something not JSON"));
      return;
    }
    const type = message.type;
    if (type === "error" && this._waiters.some((w) => w.types.includes("welcome"))) {
      this._refusal = message.message; // the close that follows says which refusal
      return;
    }
    if (type === "error") {
      // the service answers a socket's messages in order: the first request waiting that this
      // error can answer is the one it answers; any other error is the page's to hear of
      const error = new SkymixError(message.code ?? "error", message.message ?? "error");
      if (!this._settle((w) => w.answers(error), (w) => w.reject(error))) {
        this._emit("error", error);
      }
      return;
    }
    this._settle((w) => w.types.includes(type) && w.accept(message), (w) => w.resolve(message));
    switch (type) {
      case "recordingState": {
        this._track(message);
        // a recording starts on a keyframe of this page's camera
        if (message.state === RECORDING_STATE.START && this._call !== null) {
          this._keyframe(this._call);
        }
        const error = message.error
          ? {
              code: message.error.code,
              message: message.error.message,
              recordingId: message.error.recordingId ?? null,
            }
          : null;
        this._emit("recordingState", message.state, message.recordingId ?? null,
          message.url ?? null, error, message.reason ?? null);
        break;
      }
      case "peerJoined":
        this._peers.set(message.peerId, message.name);
        this._emit("peerJoined", message.peerId, message.name);
        break;
      case "peerLeft":
        this._peers.delete(message.peerId);
        this._emit("peerLeft", message.peerId, message.name);
        break;
      default:
        break; // welcome, joined, pong: answers to waiters
    }
  }

  // The room's running recording: START sets it; its STOP, or an ERROR naming it, ends it.
  _track(message) {
    const id = message.recordingId ?? null;
    if (message.state === RECORDING_STATE.START) this._recordingId = id;
    else if (id !== null && id === this._recordingId) this._recordingId = null;
  }

  _closed(event) {
    const [code, text] = CLOSE_CODES[event.code] ?? ["connection_closed", "the connection closed"];
    const why = this._refusal ?? text;
    this._refusal = null;
    const error = new SkymixError(code, `${why} (close code ${event.code})`);
    for (const waiter of this._waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this._waiters = [];
    if (this._socket !== null) {
      this._socket = null;
      if (this._call !== null) this.leaveRoom(); // the service has let this page go
      if (!this._closing) this._emit("error", error);
    }
  }

  // --- the Janus side ---

  _session(Janus, call) {
    return new Promise((resolve, reject) => {
      let up = false;
      const janus = new Janus({
        server: call.info.server,
        iceServers: call.info.iceServers ?? [],
        success: () => {
          up = true;
          resolve(janus);
        },
        error: (cause) => {
          const error = janusError("the media relay", cause);
          if (!up) reject(error);
          else if (!call.left) this._emit("error", error);
        },
        destroyed: () => {},
      });
    });
  }

  _attach(Janus, call, callbacks) {
    return new Promise((resolve, reject) => {
      call.janus.attach({
        plugin: "janus.plugin.videoroom",
        success: resolve,
        error: (cause) => reject(janusError("attaching to the room", cause)),
        ...callbacks,
      });
    });
  }

  async _publish(Janus, call, { audio, video }) {
    let joinedRoom;
    const joined = new Promise((resolve, reject) => {
      joinedRoom = { resolve, reject };
    });
    let published;
    const configured = new Promise((resolve, reject) => {
      published = { resolve, reject };
    });
    const handle = await this._attach(Janus, call, {
      onmessage: (msg, jsep) => {
        if (jsep) handle.handleRemoteJsep({ jsep });
        const kind = msg.videoroom;
        if (msg.error_code) {
          const error = new SkymixError("media_failed", `the room refused: ${msg.error}`);
          joinedRoom.reject(error);
          published.reject(error);
          if (!call.left) this._emit("error", error);
          return;
        }
        if (kind === "joined") {
          call.janusId = msg.id;
          call.privateId = msg.private_id;
          joinedRoom.resolve();
          this._addFeeds(Janus, call, msg.publishers ?? []);
        } else if (kind === "event") {
          if (msg.configured === "ok" && jsep) published.resolve();
          if (msg.publishers) this._addFeeds(Janus, call, msg.publishers);
          for (const gone of [msg.unpublished, msg.leaving]) {
            if (typeof gone === "number" && call.feeds.has(gone)) this._dropFeed(call, gone);
          }
        } else if (kind === "destroyed" && !call.left) {
          this._emit("error", new SkymixError("room_closed", "the room was closed"));
        }
      },
      // Janus opens a recorder when a publisher's media comes up during a recording, but asks
      // no keyframe then: without one, the recording has no picture of this page until the
      // next (Chromium sends one only when asked)
      webrtcState: (up) => {
        if (up) this._keyframe(call);
      },
      onlocaltrack: (track, on) => {
        if (on) call.localStream.addTrack(track);
        else call.localStream.removeTrack(track);
        if (call.localVideo) {
          call.localVideo.muted = true;
          call.localVideo.srcObject = call.localStream;
        }
        this._emit("localStream", call.localStream);
      },
    });
    call.publisher = handle;
    handle.send({
      message: {
        request: "join",
        ptype: "publisher",
        room: call.info.room,
        pin: call.info.pin,
        display: call.name,
      },
    });
    await joined;
    if (!audio && !video) return;
    const tracks = [];
    if (audio) tracks.push({ type: "audio", capture: true, recv: false });
    if (video) tracks.push({ type: "video", capture: true, recv: false });
    const offer = await new Promise((resolve, reject) =>
      handle.createOffer({
        tracks,
        success: resolve,
        error: (cause) => reject(janusError("camera or microphone", cause)),
      }),
    );
    handle.send({ message: { request: "configure", audio, video }, jsep: offer });
    await configured;
    if (!call.left) this._send({ type: "publisher", janusId: call.janusId });
  }

  _keyframe(call) {
    if (call.publisher !== null && call.janusId !== null && !call.left) {
      call.publisher.send({ message: { request: "configure", keyframe: true } });
    }
  }

  _addFeeds(Janus, call, publishers) {
    for (const publisher of publishers) {
      if (publisher.id === call.janusId || call.feeds.has(publisher.id)) continue;
      const feed = { handle: null, name: publisher.display ?? "", tracks: new Map() };
      call.feeds.set(publisher.id, feed);
      this._subscribe(Janus, call, publisher.id, feed).catch((error) => {
        if (!call.left) this._emit("error", error);
      });
    }
  }

  async _subscribe(Janus, call, janusId, feed) {
    const remote = () => ({ janusId, name: feed.name });
    const handle = await this._attach(Janus, call, {
      onmessage: (msg, jsep) => {
        if (msg.error_code && !call.left) {
          this._emit("error", new SkymixError("media_failed", `receiving ${feed.name}: ${msg.error}`));
        }
        if (!jsep) return;
        handle.createAnswer({
          jsep,
          tracks: [{ type: "data" }],
          success: (answer) =>
            handle.send({ message: { request: "start", room: call.info.room }, jsep: answer }),
          error: (cause) => {
            if (!call.left) this._emit("error", janusError(`receiving ${feed.name}`, cause));
          },
        });
      },
      onremotetrack: (track, mid, on) => {
        if (call.feeds.get(janusId) !== feed) return; // dropped: its "off" went out then
        if (on) feed.tracks.set(mid, track);
        else feed.tracks.delete(mid);
        this._emit("remoteTrack", remote(), track, on);
      },
    });
    if (call.left || call.feeds.get(janusId) !== feed) {
      handle.detach();
      return;
    }
    feed.handle = handle;
    handle.send({
      message: {
        request: "join",
        ptype: "subscriber",
        room: call.info.room,
        pin: call.info.pin,
        streams: [{ feed: janusId }],
        private_id: call.privateId,
      },
    });
  }

  _dropFeed(call, janusId) {
    const feed = call.feeds.get(janusId);
    call.feeds.delete(janusId);
    if (feed === undefined) return;
    for (const track of feed.tracks.values()) {
      track.stop(); // ended, not paused: the publisher is gone
      this._emit("remoteTrack", { janusId, name: feed.name }, track, false);
    }
    feed.tracks.clear();
    if (feed.handle !== null) feed.handle.detach();
  }
}
