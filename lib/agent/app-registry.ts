/**
 * The agent's side of the connections route: local applications register over a SOCK_SEQPACKET
 * socket (only root, the agent's uid or allowed uids: SO_PEERCRED) for the local ports they serve;
 * connections a source hands over to the agent are restored by the agent (it has the privileges
 * TCP_REPAIR needs) and passed on, as live sockets with the application's state, to the
 * application registered for their local port (fd passing: no repair mode, no copy).
 *
 * Registration: the application sends one datagram `{"register":1,"ports":[...]}` and gets
 * `{"registered":[...]}` or `{"refused":"reason"}`; the transport then stays idle until the agent
 * sends `{"start":1}` and runs one handover (method 'fd') on it, which ends the registration (the
 * handover closes its channel); a closed transport unregisters its ports.
 */
import { InvalidArgumentError } from '../errors';
import { SeqpacketServer, type PeerCredentials, type SeqpacketTransport } from '../transport';
import { closeFdQuietly } from '../transport/seqpacket';

/** Largest registration message read (anything longer is refused and the transport closed). */
const MAX_REGISTRATION_BYTES = 4096;
const MAX_PORTS_PER_APP = 64;
const REGISTRATION_TIMEOUT_MS = 10_000;

export interface RegisteredApp {
  transport: SeqpacketTransport;
  ports: number[];
  peer: PeerCredentials;
  /** True while a handover runs on its transport (one at a time). */
  busy: boolean;
}

export function encodeRegistration(ports: number[]): Buffer {
  return Buffer.from(JSON.stringify({ register: 1, ports }));
}

/** Parses and checks a registration; throws InvalidArgumentError. */
export function decodeRegistration(data: Buffer): number[] {
  if (data.length > MAX_REGISTRATION_BYTES) throw new InvalidArgumentError('registration too long');
  let body: unknown;
  try {
    body = JSON.parse(data.toString('utf8'));
  } catch {
    throw new InvalidArgumentError('registration is not JSON');
  }
  const { register, ports } = (body ?? {}) as { register?: unknown; ports?: unknown };
  if (register !== 1 || !Array.isArray(ports) || ports.length === 0 || ports.length > MAX_PORTS_PER_APP)
    throw new InvalidArgumentError(`registration must be {"register":1,"ports":[1..${MAX_PORTS_PER_APP} ports]}`);
  for (let i = 0; i < ports.length; i++) {
    const port = ports[i] as unknown;
    if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535)
      throw new InvalidArgumentError(`ports[${i}] is not a TCP port`, 'ERR_OUT_OF_RANGE');
  }
  return [...new Set(ports as number[])];
}

export interface AppRegistryOptions {
  /** Where applications connect (absolute path; created 0600 unless allowUids widens it to 0666). */
  path: string;
  /** uids besides root and the agent's own that may register. */
  allowUids?: number[];
  onEvent?: (event: { event: string; [key: string]: unknown }) => void;
}

export class AppRegistry {
  private readonly server: SeqpacketServer;
  private readonly byPort = new Map<number, RegisteredApp>();
  private readonly apps = new Set<RegisteredApp>();

  constructor(private readonly options: AppRegistryOptions) {
    this.server = SeqpacketServer.listen({
      path: options.path,
      mode: (options.allowUids ?? []).length > 0 ? 0o666 : 0o600,
      ...(options.allowUids ? { allowUids: options.allowUids } : {}),
      // register() answers on the transport; a peer gone by then is only closed.
      onConnection: (transport, peer) => void this.register(transport, peer).catch(() => transport.close()),
      onRefused: (peer) => options.onEvent?.({ event: 'app-refused', uid: peer.uid, pid: peer.pid }),
      onError: (error) => options.onEvent?.({ event: 'app-socket-failed', code: error.code, message: error.message }),
    });
  }

  get path(): string {
    return this.server.path;
  }

  /** The registered ports (what the agent allows a connections handover to bring). */
  ports(): number[] {
    return [...this.byPort.keys()];
  }

  appFor(port: number): RegisteredApp | undefined {
    const app = this.byPort.get(port);
    return app !== undefined && !app.transport.isClosed ? app : undefined;
  }

  private async register(transport: SeqpacketTransport, peer: PeerCredentials): Promise<void> {
    let ports: number[];
    try {
      // A connection that sends nothing is closed after 10 s (its receive then rejects).
      const timer = setTimeout(() => transport.close(), REGISTRATION_TIMEOUT_MS);
      const message = await transport.receive().finally(() => clearTimeout(timer));
      message.fds.forEach(closeFdQuietly);
      ports = decodeRegistration(message.data);
      const taken = ports.filter((port) => this.appFor(port) !== undefined);
      if (taken.length > 0) throw new InvalidArgumentError(`ports already registered: ${taken.join(', ')}`);
    } catch (error) {
      this.options.onEvent?.({ event: 'app-refused', pid: peer.pid, reason: (error as Error).message });
      try {
        transport.send(Buffer.from(JSON.stringify({ refused: (error as Error).message })));
      } catch {
        // gone
      }
      transport.close();
      return;
    }
    const app: RegisteredApp = { transport, ports, peer, busy: false };
    this.apps.add(app);
    for (const port of ports) this.byPort.set(port, app);
    transport.send(Buffer.from(JSON.stringify({ registered: ports })));
    this.options.onEvent?.({ event: 'app-registered', ports, pid: peer.pid, uid: peer.uid });
    void transport.closed().then(() => this.unregister(app));
  }

  private unregister(app: RegisteredApp): void {
    if (!this.apps.delete(app)) return;
    for (const port of app.ports) if (this.byPort.get(port) === app) this.byPort.delete(port);
    this.options.onEvent?.({ event: 'app-gone', ports: app.ports, pid: app.peer.pid });
  }

  /** Stops listening and closes every registered application's transport. Idempotent. */
  close(): void {
    this.server.close();
    for (const app of [...this.apps]) {
      app.transport.close();
      this.unregister(app);
    }
  }
}
