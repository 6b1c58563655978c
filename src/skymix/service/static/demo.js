// The demo page of skymix live rooms (/demo): join a room, see and hear the others, record.
import { RECORDING_STATE, Skymix } from "/skymix.js";

const $ = (selector) => document.querySelector(selector);
const key = document.querySelector('meta[name="skymix-key"]').content;

// A room id from the URL, or a new one put there so the link can be shared.
function roomOfPage() {
  const url = new URL(window.location.href);
  let room = url.searchParams.get("room");
  if (!room) {
    const bytes = crypto.getRandomValues(new Uint8Array(6));
    const part = (b) => Array.from(b, (x) => (x % 36).toString(36)).join("");
    room = `room-${part(bytes.slice(0, 3))}-${part(bytes.slice(3))}`;
    url.searchParams.set("room", room);
    window.history.replaceState(null, "", url);
  }
  return room;
}

const room = roomOfPage();
$("#share-link").href = window.location.href;
$("#share-link").textContent = window.location.href;
$("#name").value = window.localStorage.getItem("skymix-demo-name") ?? "";

let skymix = null;
let recording = false;

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("#log").prepend(item);
}

function setButtons(joined) {
  $("#join").disabled = joined;
  $("#name").disabled = joined;
  $("#leave").disabled = !joined;
  $("#start").disabled = !joined || recording;
  $("#stop").disabled = !joined || !recording;
}

function showState(state, text) {
  $("#state").dataset.state = state;
  $("#state").textContent = text;
}

function tile(id, name) {
  let figure = document.querySelector(`[data-peer="${CSS.escape(id)}"]`);
  if (figure === null) {
    figure = document.createElement("figure");
    figure.dataset.peer = id;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.srcObject = new MediaStream();
    const caption = document.createElement("figcaption");
    caption.textContent = name;
    figure.append(video, caption);
    $("#peers").append(figure);
  }
  return figure;
}

function onRecordingState(state, recordingId, url, error, reason) {
  recording = state === RECORDING_STATE.START || (recording && state === RECORDING_STATE.ERROR);
  if (state === RECORDING_STATE.START) {
    showState(state, `START: recording ${recordingId}`);
    $("#result").hidden = true;
  } else if (state === RECORDING_STATE.STOP) {
    showState(state, `STOP (${reason ?? "requested"}): mixing ${recordingId}`);
  } else if (state === RECORDING_STATE.LINK) {
    showState(state, `LINK: recording ${recordingId} is ready`);
    $("#recording").src = url;
    $("#download").href = url;
    $("#result").hidden = false;
  } else {
    showState(RECORDING_STATE.ERROR, `ERROR: ${error?.message ?? "failed"}`);
  }
  log(`recording ${state}${recordingId ? ` ${recordingId}` : ""}`);
  setButtons(skymix?.room != null);
}

async function join() {
  const name = $("#name").value.trim();
  if (name === "") {
    $("#name").focus();
    return;
  }
  window.localStorage.setItem("skymix-demo-name", name);
  $("#join").disabled = true;
  skymix = new Skymix();
  skymix.on("recordingState", onRecordingState);
  skymix.on("peerJoined", (peerId, peerName) => log(`${peerName} joined`));
  skymix.on("peerLeft", (peerId, peerName) => log(`${peerName} left`));
  skymix.on("remoteTrack", (remote, track, on) => {
    const figure = tile(`janus-${remote.janusId}`, remote.name);
    const stream = figure.querySelector("video").srcObject;
    if (on) {
      if (!stream.getTracks().includes(track)) stream.addTrack(track);
    } else if (track.readyState === "ended") {
      stream.removeTrack(track); // its publisher left (a paused track stays: camera off)
      if (stream.getTracks().length === 0) figure.remove();
    }
  });
  skymix.on("error", (error) => {
    log(`error: ${error.message}`);
    if (skymix?.room == null) {
      setButtons(false);
      document.querySelectorAll("[data-peer]").forEach((figure) => figure.remove());
    }
  });
  try {
    await skymix.init(key);
    const local = tile("local", `${name} (you)`);
    const joined = await skymix.joinRoom(room, { name, localVideo: local.querySelector("video") });
    local.dataset.peer = joined.peerId;
    log(`joined ${room} as ${name}; ${joined.peers.length} other(s) here`);
    setButtons(true);
  } catch (error) {
    log(`could not join: ${error.message}`);
    showState(RECORDING_STATE.ERROR, `ERROR: ${error.message}`);
    skymix.close();
    skymix = null;
    document.querySelectorAll("[data-peer]").forEach((figure) => figure.remove());
    setButtons(false);
  }
}

async function leave() {
  await skymix.leaveRoom();
  skymix.close();
  skymix = null;
  recording = false;
  document.querySelectorAll("[data-peer]").forEach((figure) => figure.remove());
  log("left the room");
  setButtons(false);
}

$("#join").addEventListener("click", join);
$("#name").addEventListener("keydown", (event) => {
  if (event.key === "Enter") join();
});
$("#leave").addEventListener("click", leave);
$("#start").addEventListener("click", () => {
  $("#start").disabled = true;
  skymix.startRecording().catch((error) => log(`start: ${error.message}`));
});
$("#stop").addEventListener("click", () => {
  $("#stop").disabled = true;
  skymix.stopRecording().catch((error) => log(`stop: ${error.message}`));
});
