/** `node-criu service`: runs `criu service` on a socket the user names, until Ctrl-C / SIGTERM. */
import { startCriuService } from '../criu';
import { CliError, COMMON_OPTIONS, EXIT, parse, printResult, requireRoot, UsageError, type Output } from './common';

export const SERVICE_HELP = `Usage: node-criu service --address PATH [--socket-mode MODE] [options]

Runs 'criu service' listening only on the unix socket PATH, for clients such as
new Criu({ mode: 'service', address: PATH }), until interrupted (Ctrl-C or SIGTERM); then stops it
and removes the socket.

The socket is mode 0600 by default: only its owner (root) can connect; another user gets EACCES.
Whoever can connect can have CRIU, running as root, dump or restore any process: widen it (e.g.
--socket-mode 0660 for the socket's group) only for users trusted as root. Missing parent
directories are created 0700. PATH must not exist yet and is at most 107 bytes once absolute.

Options:
  --address PATH         the socket path (required)
  --socket-mode MODE     octal permissions of the socket (default 0600)
  --criu-path PATH       the criu executable to use
  --json                 print one JSON document on stdout once listening ({address, pid, socketMode})
  -q, --quiet            no progress on stderr
  -h, --help             this help

Exit codes: 0 stopped by a signal, 1 CRIU failed to start or exited, 2 usage (or PATH exists),
3 not root / no CRIU (or a capability missing).`;

function octalMode(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^0?[0-7]{3}$/.test(value))
    throw new UsageError(`--socket-mode must be an octal mode such as 0600, got '${value}'`);
  return parseInt(value, 8);
}

export async function serviceCommand(args: string[], out: Output, signal: AbortSignal): Promise<number> {
  const values = parse(args, { ...COMMON_OPTIONS, address: { type: 'string' }, 'socket-mode': { type: 'string' } });
  if (values.address === undefined) throw new UsageError('--address is required');
  const socketMode = octalMode(values['socket-mode']);
  requireRoot();
  const service = await startCriuService({
    address: values.address,
    ...(socketMode !== undefined ? { socketMode } : {}),
    ...(values['criu-path'] !== undefined ? { criuPath: values['criu-path'] } : {}),
    signal,
  });
  try {
    const mode = `0${(socketMode ?? 0o600).toString(8)}`;
    printResult(out, { command: 'service', address: service.address, pid: service.pid, socketMode: mode }, [
      `criu service (pid ${service.pid}) listening on ${service.address} (mode ${mode}); Ctrl-C stops it`,
    ]);
    const stopped = await Promise.race([
      new Promise<'signal'>((resolve) => {
        if (signal.aborted) return resolve('signal');
        signal.addEventListener('abort', () => resolve('signal'), { once: true });
      }),
      service.exited,
    ]);
    if (stopped !== 'signal') {
      throw new CliError(
        `criu service exited on its own (${stopped.signal ?? `code ${String(stopped.code)}`})`,
        EXIT.FAILED,
        'ERR_CRIU_EXITED',
      );
    }
    out.progress('stopping criu service');
    return EXIT.OK;
  } finally {
    await service.close();
  }
}
