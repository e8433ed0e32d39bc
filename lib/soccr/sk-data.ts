/** struct libsoccr_sk_data as a typed object, and its 17-word ABI form. */
import { InvalidArgumentError } from '../errors';
import { describeValue } from './errors';

/** Linux TCP states (include/net/tcp_states.h). */
export const TcpState = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
} as const;
export type TcpStateName = keyof typeof TcpState;

const stateNames = new Map<number, TcpStateName>(
  (Object.entries(TcpState) as [TcpStateName, number][]).map(([name, value]) => [value, name]),
);

export function tcpStateName(state: number): TcpStateName | undefined {
  return stateNames.get(state);
}

/** Flag in SkData.flags: the five window fields are valid. */
export const SOCCR_FLAGS_WINDOW = 0x1;

/** Every field of struct libsoccr_sk_data (in ABI order), plus the state's name. */
export interface SkData {
  state: number;
  stateName: TcpStateName;
  /** Bytes in the receive queue. */
  inqLen: number;
  /** rcv_nxt: the END of the receive queue. */
  inqSeq: number;
  /** Bytes in the send queue: sent-but-unacknowledged followed by unsent. */
  outqLen: number;
  /** write_seq: the END of the send queue. */
  outqSeq: number;
  /** Of outqLen, the trailing bytes never sent. */
  unsqLen: number;
  optMask: number;
  mssClamp: number;
  sndWscale: number;
  rcvWscale: number;
  timestamp: number;
  flags: number;
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}

/** The numeric fields in ABI order (word i of the Uint32Array). */
export const SK_DATA_FIELDS = [
  'state',
  'inqLen',
  'inqSeq',
  'outqLen',
  'outqSeq',
  'unsqLen',
  'optMask',
  'mssClamp',
  'sndWscale',
  'rcvWscale',
  'timestamp',
  'flags',
  'sndWl1',
  'sndWnd',
  'maxWindow',
  'rcvWnd',
  'rcvWup',
] as const satisfies readonly (keyof SkData)[];

/** The SkData in words[at..at+16]. */
export function skDataFromWords(words: Uint32Array, at = 0): SkData {
  // One literal (one object shape) rather than a loop: batches build thousands of these.
  return {
    state: words[at],
    stateName: tcpStateName(words[at]) ?? (`UNKNOWN(${words[at]})` as TcpStateName),
    inqLen: words[at + 1],
    inqSeq: words[at + 2],
    outqLen: words[at + 3],
    outqSeq: words[at + 4],
    unsqLen: words[at + 5],
    optMask: words[at + 6],
    mssClamp: words[at + 7],
    sndWscale: words[at + 8],
    rcvWscale: words[at + 9],
    timestamp: words[at + 10],
    flags: words[at + 11],
    sndWl1: words[at + 12],
    sndWnd: words[at + 13],
    maxWindow: words[at + 14],
    rcvWnd: words[at + 15],
    rcvWup: words[at + 16],
  };
}

/** Writes already validated sk_data into words[at..at+16] (no checks, no allocation). */
export function writeSkDataWords(data: SkData, words: Uint32Array, at = 0): void {
  words[at] = data.state;
  words[at + 1] = data.inqLen;
  words[at + 2] = data.inqSeq;
  words[at + 3] = data.outqLen;
  words[at + 4] = data.outqSeq;
  words[at + 5] = data.unsqLen;
  words[at + 6] = data.optMask;
  words[at + 7] = data.mssClamp;
  words[at + 8] = data.sndWscale;
  words[at + 9] = data.rcvWscale;
  words[at + 10] = data.timestamp;
  words[at + 11] = data.flags;
  words[at + 12] = data.sndWl1;
  words[at + 13] = data.sndWnd;
  words[at + 14] = data.maxWindow;
  words[at + 15] = data.rcvWnd;
  words[at + 16] = data.rcvWup;
}

/**
 * Checks every field is a uint32 and the state is one libsoccr restores. Returns a problem
 * description, or undefined when valid (callers wrap it in their own error class).
 */
export function skDataProblem(data: unknown): string | undefined {
  if (typeof data !== 'object' || data === null) return 'sk_data must be an object';
  const d = data as Record<string, unknown>;
  for (const field of SK_DATA_FIELDS) {
    const v = d[field];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      return `sk_data.${field} must be a uint32 (got ${describeValue(v)})`;
    }
  }
  const state = d.state as number;
  if (!RESTORABLE_STATES.has(state))
    return `sk_data.state ${state} (${tcpStateName(state) ?? 'unknown'}) cannot be restored`;
  if ((d.unsqLen as number) > (d.outqLen as number)) return 'sk_data.unsqLen must not exceed outqLen';
  if (((d.flags as number) & ~SOCCR_FLAGS_WINDOW) !== 0)
    return `sk_data.flags has unknown bits (${describeValue(d.flags)})`;
  return undefined;
}

/** States libsoccr saves and restores (everything but LISTEN, SYN_RECV and TIME_WAIT). */
export const RESTORABLE_STATES: ReadonlySet<number> = new Set([
  TcpState.ESTABLISHED,
  TcpState.FIN_WAIT1,
  TcpState.FIN_WAIT2,
  TcpState.CLOSE_WAIT,
  TcpState.LAST_ACK,
  TcpState.CLOSING,
  TcpState.CLOSE,
  TcpState.SYN_SENT,
]);

/** The ABI form of a validated SkData (throws InvalidArgumentError otherwise). */
export function skDataToWords(data: SkData): Uint32Array {
  const problem = skDataProblem(data);
  if (problem) throw new InvalidArgumentError(problem);
  const words = new Uint32Array(SK_DATA_FIELDS.length);
  writeSkDataWords(data, words);
  return words;
}
