/** The demo's error class (its own file so the demo's child processes can use it without index.ts). */
import { NodeCriuError } from '../errors';

/**
 * The demo could not start (ERR_DEMO_NOT_ROOT, ERR_DEMO_TOOL_MISSING, ERR_DEMO_ARGS), was aborted
 * (ERR_DEMO_ABORTED), or a step of it failed: ERR_DEMO_CONTROL_CLOSED / ERR_DEMO_CONTROL_TIMEOUT
 * (the control link to a demo process), ERR_DEMO_UNKNOWN_COMMAND, ERR_DEMO_SHUTTING_DOWN,
 * ERR_DEMO_START_FAILED (a demo process or the clients did not come up), ERR_DEMO_HANDOVER_FAILED,
 * or the code a demo process reported over the control link (ERR_DEMO_REMOTE when it had none).
 */
export class DemoError extends NodeCriuError {
  constructor(message: string, code: string, cause?: unknown) {
    super(message, cause === undefined ? { code } : { code, cause });
  }
}
