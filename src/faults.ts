/**
 * Fault injection for tests: OVSNET_FAULT=<Call>:<point> makes the plugin
 * kill itself (SIGKILL, no cleanup) at that point of that call, so tests can
 * show that a restart repairs whatever a crash left half done. Off unless set.
 */
export const FAULT_POINTS = {
  CreateNetwork: ['after-record', 'after-bridge', 'after-gateway', 'after-switch'],
  CreateEndpoint: ['after-record'],
  Join: ['after-devices'],
  Leave: ['before-record'],
  DeleteEndpoint: ['after-record'],
  DeleteNetwork: ['after-teardown'],
  RequestAddress: ['after-claim', 'after-record'],
} as const;

export type FaultCall = keyof typeof FAULT_POINTS;

export interface Faults {
  /** Called at each fault point; dies there if this is the configured one. */
  point(call: FaultCall, point: string): void;
}

export const noFaults: Faults = { point: () => {} };

export function parseFault(text: string): { call: FaultCall; point: string } | undefined {
  const [call, point] = text.split(':');
  const points = (FAULT_POINTS as Record<string, readonly string[]>)[call ?? ''];
  return points && point && points.includes(point) ? { call: call as FaultCall, point } : undefined;
}

export function killAt(fault: { call: FaultCall; point: string }, onKill: () => void): Faults {
  return {
    point(call, point) {
      if (call === fault.call && point === fault.point) onKill();
    },
  };
}
