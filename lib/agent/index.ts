/** The migration agent (target host) and its protocol. */
export { startMigrationAgent } from './agent';
export type { AgentEvent, MigrationAgent, MigrationAgentOptions } from './agent';
export type { AgentLimits } from './receive';
export { AgentProtocolError, AGENT_MAX_PAYLOAD, AGENT_PROTOCOL_VERSION } from './protocol';
export { acceptHandoverViaAgent } from './app-link';
export type { AcceptViaAgentOptions } from './app-link';
