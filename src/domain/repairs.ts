/**
 * What puts a difference between the desired host and the observed one right, as data: the repairs the
 * host-diff gives, the order in which a pass applies them, and a difference as `ovsnet doctor` reports it.
 */
import type { Drift } from './drift.js';
import type { FirewallRules } from './firewall.js';
import type { PortFlows } from './flows.js';
import type { BridgeSpec, DesiredPort, GatewaySpec } from './host.js';

export type Repair =
  | { readonly type: 'add-bridge'; readonly bridge: BridgeSpec }
  /** Adds the port, replacing an owned one of that name. */
  | { readonly type: 'add-port'; readonly port: DesiredPort }
  /** Sets the port's tag, trunks, protection, options, MTU and external_ids in place. */
  | { readonly type: 'update-port'; readonly port: DesiredPort }
  | { readonly type: 'delete-port'; readonly name: string; readonly deleteLink: boolean }
  | { readonly type: 'configure-gateway'; readonly gateway: GatewaySpec }
  | { readonly type: 'delete-veth'; readonly name: string }
  /** Puts the host end of a veth pair in the plugin's device group (the firewall drops what it brings the host). */
  | { readonly type: 'isolate-veth'; readonly name: string }
  /** Puts a port's guard flows (and meter) in place, then deletes its `stale` flows (cookie/mask each). */
  | { readonly type: 'sync-flows'; readonly flows: PortFlows; readonly stale: readonly string[] }
  /** Deletes flows of a bridge by cookie/mask. */
  | { readonly type: 'delete-flows'; readonly bridge: string; readonly cookies: readonly string[] }
  | { readonly type: 'delete-bridge'; readonly name: string }
  /** Puts a bridge's base flow (its normal forwarding, or OVN's marker) in place: after the guards of its container ports. */
  | { readonly type: 'sync-base-flows'; readonly bridge: string; readonly pipeline: 'normal' | 'ovn' }
  /** Makes a bridge of the plugin's fail closed (fail_mode secure), once its base flow is there. */
  | { readonly type: 'secure-bridge'; readonly name: string }
  | { readonly type: 'sync-firewall'; readonly rules: FirewallRules }
  | { readonly type: 'enable-forwarding' };

export interface HostDifference {
  readonly drift: Drift;
  /** What puts it right; empty when it can only be reported. */
  readonly repairs: readonly Repair[];
  /** Set for what belongs to an endpoint: its repair goes through the endpoint's lock. */
  readonly endpointId?: string;
}

/** The ordering in which repairs are applied: bridges first, ports before their kernel settings, bridges last out. */
export const REPAIR_ORDER: readonly Repair['type'][] = [
  'add-bridge',
  'delete-port',
  'add-port',
  'update-port',
  'sync-flows',
  'delete-flows',
  'configure-gateway',
  'isolate-veth',
  'delete-veth',
  'sync-firewall',
  'enable-forwarding',
  'sync-base-flows',
  'secure-bridge',
  'delete-bridge',
];

/**
 * Repairs that let a bridge forward: applied after every other repair of a pass, the guards of its
 * container ports included, so that no port forwards unguarded in between.
 */
export const LAST_REPAIRS: ReadonlySet<Repair['type']> = new Set(['sync-base-flows', 'secure-bridge']);
