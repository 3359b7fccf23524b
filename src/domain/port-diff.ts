/**
 * The host-diff of ports (everything the plugin sets on one, and the command that makes it) and of the
 * guard flows of container ports (by their cookies: missing, changed, or left behind by a port that went).
 */
import { REPAIR } from './drift.js';
import { BRIDGE_FLOWS_KEY, baseFlows, cookiePortBits, cookiePrefixOfBits, portBits, portFlows } from './flows.js';
import type { DesiredHost, DesiredPort, ObservedHost, ObservedPort } from './host.js';
import { short } from './names.js';
import type { HostDifference } from './repairs.js';

const sameList = (a: readonly number[], b: readonly number[]) => JSON.stringify([...a].sort((x, y) => x - y)) === JSON.stringify([...b].sort((x, y) => x - y));

/** What differs, as `ovs-vsctl` arguments that set it right (one per difference); structural differences need the port made again. */
export function portDifferences(want: DesiredPort, have: ObservedPort): Array<{ what: string; set: string | undefined }> {
  const out: Array<{ what: string; set: string | undefined }> = [];
  const name = want.name;
  if (have.bridge !== want.bridge) out.push({ what: `it is on bridge ${have.bridge || '(none)'}, not ${want.bridge}`, set: undefined });
  if (have.type !== want.type) out.push({ what: `its type is "${have.type}", not "${want.type}"`, set: undefined });
  if (have.tag !== want.tag) {
    out.push({
      what: `tag ${have.tag ?? '(none)'} where ${want.tag ?? '(none)'} belongs`,
      set: want.tag === undefined ? `clear port ${name} tag` : `set port ${name} tag=${want.tag}`,
    });
  }
  if (!sameList(have.trunks, want.trunks)) {
    out.push({
      what: `trunks ${have.trunks.join(',') || '(none)'} where ${want.trunks.join(',') || '(none)'} belong`,
      set: want.trunks.length === 0 ? `clear port ${name} trunks` : `set port ${name} trunks=${want.trunks.join(',')}`,
    });
  }
  if (have.vlanMode !== want.vlanMode && want.vlanMode !== undefined) {
    const trunkOfAll = have.tag === undefined && have.trunks.length === 0 && have.vlanMode !== 'access';
    out.push({
      what: `vlan_mode ${have.vlanMode ?? '(none)'} where ${want.vlanMode} belongs${trunkOfAll && want.vlanMode === 'access' ? ': without a tag it is a trunk of every VLAN on the bridge' : ''}`,
      set: `set port ${name} vlan_mode=${want.vlanMode}`,
    });
  }
  if (have.protected !== want.protected) out.push({ what: `protected=${have.protected} where ${want.protected} belongs`, set: `set port ${name} protected=${want.protected}` });
  for (const key of new Set([...Object.keys(want.options), ...Object.keys(have.options)])) {
    const w = want.options[key];
    const h = have.options[key];
    if (w === h) continue;
    out.push({
      what: `option ${key}=${h ?? '(none)'} where ${w ?? '(none)'} belongs`,
      set: w === undefined ? `remove interface ${name} options ${key}` : `set interface ${name} options:${key}=${w}`,
    });
  }
  if (want.mtuRequest !== undefined && have.mtuRequest !== want.mtuRequest) {
    out.push({ what: `mtu_request ${have.mtuRequest ?? '(none)'} where ${want.mtuRequest} belongs`, set: `set interface ${name} mtu_request=${want.mtuRequest}` });
  }
  for (const [key, value] of Object.entries(want.externalIds)) {
    if (have.externalIds[key] !== value) out.push({ what: `external_ids:${key}=${have.externalIds[key] ?? '(none)'} where ${value} belongs`, set: `set port ${name} external_ids:${key}=${value}` });
  }
  for (const [key, value] of Object.entries(want.interfaceExternalIds)) {
    if (have.interfaceExternalIds[key] !== value) {
      out.push({ what: `interface external_ids:${key}=${have.interfaceExternalIds[key] ?? '(none)'} where ${value} belongs`, set: `set interface ${name} external_ids:${key}=${value}` });
    }
  }
  return out;
}

export function portDiffers(want: DesiredPort, changes: ReturnType<typeof portDifferences>): HostDifference {
  const structural = changes.some((c) => c.set === undefined);
  return {
    drift: {
      kind: 'port-differs',
      subject: want.name,
      port: want.name,
      role: want.role,
      networkId: want.networkId,
      endpointId: want.endpointId,
      detail: `OVS port ${want.name} (${want.role}${want.networkId ? ` of network ${short(want.networkId)}` : ''}) differs: ${changes.map((c) => c.what).join('; ')}`,
      fix: structural ? REPAIR : `ovs-vsctl ${changes.map((c) => c.set).join(' -- ')}`,
    },
    repairs: [{ type: structural ? 'add-port' : 'update-port', port: want }],
    endpointId: want.endpointId,
  };
}

/** `ovs-vsctl` arguments that make the port from nothing. */
export function addPortCommand(port: DesiredPort): string {
  const sets = [
    port.tag === undefined ? '' : ` tag=${port.tag}`,
    port.vlanMode === undefined ? '' : ` vlan_mode=${port.vlanMode}`,
    port.trunks.length ? ` trunks=${port.trunks.join(',')}` : '',
    port.protected ? ' protected=true' : '',
  ].join('');
  const iface = [
    port.type ? ` type=${port.type}` : '',
    ...Object.entries(port.options).map(([k, v]) => ` options:${k}=${v}`),
    port.mtuRequest === undefined ? '' : ` mtu_request=${port.mtuRequest}`,
    ...Object.entries(port.interfaceExternalIds).map(([k, v]) => ` external_ids:${k}=${v}`),
  ].join('');
  return (
    `ovs-vsctl add-port ${port.bridge} ${port.name}${sets}` +
    (iface ? ` -- set interface ${port.name}${iface}` : '') +
    ` -- set port ${port.name} ${Object.entries(port.externalIds).map(([k, v]) => `external_ids:${k}=${v}`).join(' ')}`
  );
}

// ---- the guard flows of container ports ----

/**
 * Each container port's guard flows as its ofport calls for them, compared by
 * cookie (which digests the whole flow), and its meter; the plugin's flows of
 * no port that should have them are debris. Only bridges whose flows were read
 * are compared, and only ports that ovs-vswitchd numbered.
 */
export function flowDifferences(desired: DesiredHost, observed: ObservedHost, held: ReadonlySet<string> = new Set()): HostDifference[] {
  if (!observed.flows) return [];
  const out: HostDifference[] = [];
  // The flows of a deleted endpoint's port on its way out go with it.
  const going = new Set([...held].map(portBits));
  for (const [bridge, have] of observed.flows) {
    const byPort = new Map<bigint, string[]>();
    for (const cookie of have.cookies) {
      const bits = cookiePortBits(cookie);
      byPort.set(bits, [...(byPort.get(bits) ?? []), cookie]);
    }
    const accounted = new Set<bigint>();
    const bridgeSpec = desired.bridges.get(bridge);
    const guarded = [...desired.ports.values()].some((p) => p.bridge === bridge && p.guard);
    if (bridgeSpec && (bridgeSpec.madeBy === 'plugin' || guarded)) {
      const bits = portBits(BRIDGE_FLOWS_KEY);
      accounted.add(bits);
      const wanted = baseFlows(bridge, bridgeSpec.madeBy === 'plugin' ? 'normal' : 'ovn').flows.map((f) => f.cookie);
      const cookies = byPort.get(bits) ?? [];
      if (countMissing(wanted, cookies).length > 0 || countMissing(cookies, wanted).length > 0) {
        out.push({
          drift: {
            kind: 'bridge-flows-differ',
            subject: bridge,
            detail:
              bridgeSpec.madeBy === 'plugin'
                ? `bridge ${bridge} lacks the plugin's base flow (its normal forwarding, below the guards)${bridgeSpec.failMode === 'secure' ? ': failing closed, it forwards nothing' : ''}`
                : `bridge ${bridge} lacks the plugin's marker flow: ovn-controller cleared the bridge, the guards of its containers' ports with it`,
            fix: REPAIR,
          },
          repairs: [{ type: 'sync-base-flows', bridge, pipeline: bridgeSpec.madeBy === 'plugin' ? 'normal' : 'ovn' }],
        });
      }
    }
    for (const want of desired.ports.values()) {
      if (want.role !== 'endpoint' || want.bridge !== bridge) continue;
      const port = observed.ports.get(want.name);
      const bits = portBits(want.name);
      accounted.add(bits);
      // A missing port, or one on another bridge, is the port comparison's: its flows follow it.
      if (!port || port.bridge !== bridge || !port.ofport || port.ofport < 0) continue;
      const cookies = byPort.get(bits) ?? [];
      const flows = want.guard ? portFlows(bridge, want.name, port.ofport, want.guard) : undefined;
      const wanted = flows?.flows.map((f) => f.cookie) ?? [];
      const missing = countMissing(wanted, cookies);
      const stale = countMissing(cookies, wanted);
      const meter = flows?.meter;
      const haveMeter = meter ? have.meters.get(meter.id) : undefined;
      const meterWrong = !!meter && (haveMeter?.kbps !== meter.kbps || haveMeter.burstKbit !== meter.burstKbit);
      if (missing.length === 0 && stale.length === 0 && !meterWrong) continue;
      const what = [
        missing.length ? `${missing.length} of its ${wanted.length} guard flows missing` : '',
        stale.length ? `${stale.length} flows of the plugin that do not belong` : '',
        meterWrong ? `meter ${meter.id} ${haveMeter ? `at ${haveMeter.kbps} kbit/s, burst ${haveMeter.burstKbit} kbit` : 'missing'} where ${meter.kbps} kbit/s, burst ${meter.burstKbit} kbit belongs` : '',
      ].filter(Boolean);
      out.push({
        drift: {
          kind: 'port-flows-differ',
          subject: want.name,
          port: want.name,
          role: 'endpoint',
          networkId: want.networkId,
          endpointId: want.endpointId,
          detail: `container port ${want.name} (endpoint ${short(want.endpointId ?? '')}) ${want.guard ? 'is not guarded as it should be' : 'carries guard flows it should not'}: ${what.join('; ')}`,
          fix: REPAIR,
        },
        repairs: flows
          ? [{ type: 'sync-flows', flows, stale: [...new Set(stale)].map((c) => `${c}/-1`) }]
          : [{ type: 'delete-flows', bridge, cookies: [cookiePrefixOfBits(bits)] }],
        endpointId: want.endpointId,
      });
    }
    for (const [bits, cookies] of byPort) {
      if (accounted.has(bits) || going.has(bits)) continue;
      out.push({
        drift: {
          kind: 'orphan-flows',
          subject: `${bridge}:${cookiePrefixOfBits(bits)}`,
          detail: `bridge ${bridge} has ${cookies.length} guard flows of the plugin for a port that no container has`,
          fix: `ovs-ofctl -O OpenFlow13 del-flows ${bridge} cookie=${cookiePrefixOfBits(bits)}`,
        },
        repairs: [{ type: 'delete-flows', bridge, cookies: [cookiePrefixOfBits(bits)] }],
      });
    }
  }
  return out;
}

/** What of `want` (a multiset) `have` lacks. */
function countMissing(want: readonly string[], have: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const h of have) left.set(h, (left.get(h) ?? 0) + 1);
  const out: string[] = [];
  for (const w of want) {
    const n = left.get(w) ?? 0;
    if (n > 0) left.set(w, n - 1);
    else out.push(w);
  }
  return out;
}
