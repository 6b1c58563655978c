// Types of skymix.js (docs/live.md, "JavaScript API").

/** The states a recording goes through. */
export declare const RECORDING_STATE: {
  readonly START: "START";
  readonly STOP: "STOP";
  readonly LINK: "LINK";
  readonly ERROR: "ERROR";
};

export type RecordingState = (typeof RECORDING_STATE)[keyof typeof RECORDING_STATE];

/** Why a recording stopped. */
export type StopReason =
  | "requested"
  | "max_length"
  | "room_empty"
  | "relay_failed"
  | "service_restarted";

/** What went wrong; `code` is stable. */
export declare class SkymixError extends Error {
  constructor(code: string, message: string, details?: Record<string, unknown>);
  readonly name: "SkymixError";
  /** e.g. "unauthorized", "origin_not_allowed", "room_full", "recording_running",
   * "connection_closed", "media_failed" */
  readonly code: string;
  /** the running recording, when a start was refused because one runs */
  readonly recordingId?: string | null;
}

export interface SkymixOptions {
  /** the skymix service's URL; default: the page's origin */
  server?: string;
}

export interface JoinOptions {
  /** the name the other peers and the recording show (1 to 64 characters) */
  name: string;
  /** shows this page's camera (muted) */
  localVideo?: HTMLVideoElement | null;
  /** publish the microphone (default true) */
  audio?: boolean;
  /** publish the camera (default true) */
  video?: boolean;
}

export interface Peer {
  peerId: string;
  name: string;
}

export interface RecordingInfo {
  state: "START";
  recordingId: string;
}

export interface Welcome {
  appId: string;
  /** the room a token is bound to; null with a public key */
  room: string | null;
}

export interface JoinedRoom {
  peerId: string;
  room: string;
  /** the other peers in the room when this page joined */
  peers: Peer[];
  /** the recording running when this page joined */
  recording: RecordingInfo | null;
}

/** Why a recording could not start or stop, or failed (as the service sent it). */
export interface RecordingError {
  /** e.g. "recording_disabled", "recording_running", "no_recording", "relay_failed" */
  code: string;
  message: string;
  /** the running recording, when a start was refused because one runs */
  recordingId?: string | null;
}

/** The answer to startRecording or stopRecording (also given to `recordingState` handlers). */
export interface RecordingStateMessage {
  state: RecordingState;
  recordingId: string | null;
  url: string | null;
  error: RecordingError | null;
  reason: StopReason | null;
}

/** Whose track a `remoteTrack` event carries: a publisher in the media relay. */
export interface RemotePeer {
  /** the publisher's id in Janus */
  janusId: number;
  /** its display name */
  name: string;
}

export interface SkymixEvents {
  /** START (with its id), STOP (with its reason), LINK (with the recording's URL), ERROR */
  recordingState: (
    state: RecordingState,
    recordingId: string | null,
    url: string | null,
    error: RecordingError | null,
    reason: StopReason | null,
  ) => void;
  peerJoined: (peerId: string, name: string) => void;
  peerLeft: (peerId: string, name: string) => void;
  /** a remote track starts (`on` true), or pauses (`on` false, `track.readyState` "live":
   * no media for a while, e.g. a camera turned off) or ends (false, "ended": its publisher
   * left) */
  remoteTrack: (remote: RemotePeer, track: MediaStreamTrack, on: boolean) => void;
  /** this page's camera and microphone, as they are published */
  localStream: (stream: MediaStream) => void;
  /** a failure outside a call: the connection closed, the media relay failed */
  error: (error: SkymixError) => void;
}

export declare class Skymix {
  constructor(options?: SkymixOptions);
  readonly server: string;
  readonly appId: string | null;
  readonly peerId: string | null;
  readonly room: string | null;
  /** the other peers in the room now */
  readonly peers: Peer[];
  /** connect with a public key (pk_...) or a room token (skr_...) */
  init(appKeyOrToken: string): Promise<Welcome>;
  joinRoom(room: string, options: JoinOptions): Promise<JoinedRoom>;
  leaveRoom(): Promise<void>;
  /** resolves with the next START (whoever asked), or the ERROR refusing this page's start
   * (`recordingId` null); an earlier recording's ERROR is no answer. Rejects on an `error`
   * message answering it (not_joined, its own internal_error), with `timeout` after 60 s
   * without an answer, or when the connection closes */
  startRecording(): Promise<RecordingStateMessage>;
  /** resolves with STOP of the recording that runs, or the ERROR refusing this page's stop
   * (`recordingId` null: nothing runs); LINK or ERROR follows as a `recordingState` event */
  stopRecording(): Promise<RecordingStateMessage>;
  /** leave any room and close the connection */
  close(): void;
  on<E extends keyof SkymixEvents>(event: E, handler: SkymixEvents[E]): SkymixEvents[E];
  off<E extends keyof SkymixEvents>(event: E, handler: SkymixEvents[E]): void;
}
