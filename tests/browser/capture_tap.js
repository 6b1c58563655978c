// Installed by the tests before any page script: getUserMedia's audio without Chromium's echo
// cancellation, noise suppression and gain control (the fake microphone's file reaches the
// encoder as written), and a tap on clones of the captured tracks recording when each beep and
// flash of the fake files was captured: beeps in Unix ms (AudioData timestamps count from
// performance.timeOrigin), flashes as VideoFrame timestamps (µs of the system's monotonic clock).
// Every message with a "type" a WebSocket of the page receives (the service's signalling, not
// Janus's) is kept in window.__skymixMessages with its arrival time (Unix ms) as "at"; every
// RTCPeerConnection in window.__skymixConnections.
(() => {
  const messages = [];
  window.__skymixMessages = messages;
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        const at = performance.timeOrigin + performance.now();
        try {
          const message = JSON.parse(event.data);
          if (message && typeof message.type === "string") messages.push({ at, ...message });
        } catch {
          // not JSON: not the service's
        }
      });
    }
  };

  // every RTCPeerConnection of the page (Janus's), for a test to reach its senders
  const connections = [];
  window.__skymixConnections = connections;
  const NativeConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativeConnection {
    constructor(...args) {
      super(...args);
      connections.push(this);
    }
  };

  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) return;
  const capture = { beeps: [], flashes: [], audioChunks: 0, videoFrames: 0 };
  window.__skymixCapture = capture;
  const original = media.getUserMedia.bind(media);

  async function tapAudio(track) {
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    let quiet = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const n = value.numberOfFrames;
      const x = new Float32Array(n);
      value.copyTo(x, { planeIndex: 0, format: "f32-planar" });
      for (let i = 0; i < n; i++) {
        if (Math.abs(x[i]) > 0.35) {
          if (quiet > 0.3 * value.sampleRate) {
            capture.beeps.push(performance.timeOrigin + value.timestamp / 1000 + (1000 * i) / value.sampleRate);
          }
          quiet = 0;
        } else {
          quiet += 1;
        }
      }
      capture.audioChunks += 1;
      value.close();
    }
  }

  async function tapVideo(track) {
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    let white = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const x = Math.floor(value.codedWidth / 4) * 2;
      const y = Math.floor(value.codedHeight / 4) * 2;
      const buffer = new Uint8Array(value.allocationSize({ rect: { x, y, width: 2, height: 2 } }));
      await value.copyTo(buffer, { rect: { x, y, width: 2, height: 2 } });
      const flash = buffer[0] > 200;
      if (flash && !white) capture.flashes.push(value.timestamp);
      white = flash;
      capture.videoFrames += 1;
      value.close();
    }
  }

  media.getUserMedia = async (constraints) => {
    if (constraints && constraints.audio) {
      const asked = typeof constraints.audio === "object" ? constraints.audio : {};
      constraints = {
        ...constraints,
        audio: { ...asked, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      };
    }
    const stream = await original(constraints);
    for (const track of stream.getAudioTracks()) tapAudio(track.clone());
    for (const track of stream.getVideoTracks()) tapVideo(track.clone());
    return stream;
  };
})();
