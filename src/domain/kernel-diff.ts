/**
 * The host-diff of what the kernel and the bridges hold beside ports: a bridge's fail mode, gateway ports
 * (up, their addresses and MTU, router advice refused), and the plugin's iptables chains.
 */
import { REPAIR } from './drift.js';
import type { FirewallRules } from './firewall.js';
import type { BridgeSpec, GatewaySpec, ObservedBridge, ObservedHost } from './host.js';
import { OWNER_KEY, OWNER_VALUE, short } from './names.js';
import type { HostDifference, Repair } from './repairs.js';

// ---- bridges ----

/**
 * A bridge that holds containers fails open unless it is secure: ovs-vswitchd, started without the
 * plugin's flows (a restart, an upgrade, a reboot), would forward its containers' traffic unguarded until
 * the plugin put them back. The plugin's own bridges are made secure; another's is only reported.
 */
export function failModeDifferences(want: BridgeSpec, have: ObservedBridge): HostDifference[] {
  if (want.madeBy !== 'plugin' || have.failMode === 'secure') return [];
  const owned = have.externalIds[OWNER_KEY] === OWNER_VALUE;
  return [
    {
      drift: {
        kind: 'bridge-fails-open',
        subject: want.name,
        detail: owned
          ? `bridge ${want.name} has fail_mode ${have.failMode || 'standalone'}: after an ovs-vswitchd restart its container ports would forward unguarded until the plugin put their guards back`
          : `bridge ${want.name} is not the plugin's and has fail_mode ${have.failMode || 'standalone'}: after an ovs-vswitchd restart its container ports forward unguarded until the plugin puts their guards back`,
        fix: owned ? REPAIR : `ovs-vsctl set bridge ${want.name} fail_mode=secure   (the plugin keeps its base flow, priority 1 NORMAL, on it)`,
      },
      repairs: owned ? [{ type: 'sync-base-flows', bridge: want.name, pipeline: 'normal' }, { type: 'secure-bridge', name: want.name }] : [],
    },
  ];
}

// ---- gateway ports in the kernel ----

export function gatewayDifferences(gateway: GatewaySpec, observed: ObservedHost): HostDifference[] {
  const out: HostDifference[] = [];
  const { port } = gateway;
  const repairs: Repair[] = [{ type: 'configure-gateway', gateway }];
  const base = { subject: port, port, networkId: gateway.networkId };
  const have = observed.addresses.get(port) ?? [];
  for (const address of gateway.addresses) {
    if (have.includes(address)) continue;
    out.push({
      drift: { kind: 'gateway-address-missing', ...base, address, detail: `gateway port ${port} of network ${short(gateway.networkId)} lacks its address ${address}`, fix: `ip address add ${address} dev ${port} && ip link set ${port} up` },
      repairs,
    });
  }
  for (const address of have) {
    if (gateway.addresses.includes(address)) continue;
    out.push({
      drift: { kind: 'gateway-address-extra', ...base, address, detail: `gateway port ${port} of network ${short(gateway.networkId)} carries ${address}, which is not its gateway`, fix: `ip address del ${address} dev ${port}` },
      repairs,
    });
  }
  const advice = observed.routerAdvice?.get(port);
  if (advice && (advice.acceptRa || advice.acceptRedirects)) {
    out.push({
      drift: {
        kind: 'gateway-accepts-ra',
        ...base,
        detail: `gateway port ${port} of network ${short(gateway.networkId)} takes ${[advice.acceptRa ? 'router advertisements' : '', advice.acceptRedirects ? 'redirects' : ''].filter(Boolean).join(' and ')}: what sends them on the network could change the host's routes`,
        fix: `sysctl -w net.ipv6.conf.${port}.accept_ra=0 net.ipv6.conf.${port}.accept_redirects=0 net.ipv4.conf.${port}.accept_redirects=0`,
      },
      repairs,
    });
  }
  const link = observed.links.get(port);
  if (link && (link.mtu !== gateway.mtu || !link.up)) {
    out.push({
      drift: { kind: 'gateway-link-differs', ...base, detail: `gateway port ${port} is ${link.up ? 'up' : 'down'} with MTU ${link.mtu}, where up with MTU ${gateway.mtu} belongs`, fix: `ip link set dev ${port} mtu ${gateway.mtu} up` },
      repairs,
    });
  }
  return out;
}

// ---- the firewall ----

export function firewallDifferences(rules: FirewallRules, observed: ObservedHost): HostDifference[] {
  if (!observed.firewall) return [];
  const out: HostDifference[] = [];
  const repairs: Repair[] = [{ type: 'sync-firewall', rules }];
  const wanted = [rules.v4, rules.v6].some((f) => f.filter.length + f.nat.length + f.dnat.length + f.isolate.length + f.input.length + f.raw.length > 0);
  if (observed.firewall.leftIn) {
    out.push({ drift: { kind: 'firewall-drift', subject: observed.firewall.leftIn, detail: `the plugin's chains are still filled in ${observed.firewall.leftIn}, which the host's rules left: its rules would apply twice`, fix: REPAIR }, repairs });
  }
  if (!observed.firewall.jumps && wanted) {
    out.push({ drift: { kind: 'firewall-drift', subject: 'jumps', detail: "a jump into the plugin's chains (OVSNET-FORWARD, OVSNET-POSTROUTING, OVSNET-DNAT, OVSNET-ISOLATE, OVSNET-INPUT, OVSNET-PORTS) is missing", fix: REPAIR }, repairs });
  }
  const rows = [
    { table: 'filter (IPv4)', have: observed.firewall.filter4, want: rules.v4.filter },
    { table: 'nat (IPv4)', have: observed.firewall.nat4, want: rules.v4.nat },
    { table: 'filter (IPv6)', have: observed.firewall.filter6, want: rules.v6.filter },
    { table: 'nat DNAT (IPv4)', have: observed.firewall.dnat4 ?? [], want: rules.v4.dnat },
    { table: 'nat (IPv6)', have: observed.firewall.nat6 ?? [], want: rules.v6.nat },
    { table: 'nat DNAT (IPv6)', have: observed.firewall.dnat6 ?? [], want: rules.v6.dnat },
    { table: 'mangle isolation (IPv4)', have: observed.firewall.isolate4 ?? [], want: rules.v4.isolate },
    { table: 'mangle input (IPv4)', have: observed.firewall.input4 ?? [], want: rules.v4.input },
    { table: 'mangle isolation (IPv6)', have: observed.firewall.isolate6 ?? [], want: rules.v6.isolate },
    { table: 'mangle input (IPv6)', have: observed.firewall.input6 ?? [], want: rules.v6.input },
    { table: 'raw ports (IPv4)', have: observed.firewall.raw4 ?? [], want: rules.v4.raw },
    { table: 'raw ports (IPv6)', have: observed.firewall.raw6 ?? [], want: rules.v6.raw },
  ];
  for (const { table, have, want } of rows) {
    // Compare per network (by the comment tag): iptables may print a rule's matches in another order.
    const count = (list: readonly string[]) => {
      const tags = new Map<string, number>();
      for (const r of list) {
        const tag = /ovsnet:(?:[0-9a-z]{12}|foreign|ports)/.exec(r)?.[0] ?? 'untagged';
        tags.set(tag, (tags.get(tag) ?? 0) + 1);
      }
      return tags;
    };
    const haveTags = count(have);
    const wantTags = count(want.map((r) => r.join(' ')));
    for (const tag of new Set([...haveTags.keys(), ...wantTags.keys()])) {
      const h = haveTags.get(tag) ?? 0;
      const w = wantTags.get(tag) ?? 0;
      if (h !== w) out.push({ drift: { kind: 'firewall-drift', subject: tag, detail: `the ${table} chain has ${h} rules for ${tag} where ${w} belong`, fix: REPAIR }, repairs });
    }
    // The rules against other container networks name their bridges, which come and go: compare the names.
    const bridges = (list: readonly string[]) =>
      [...new Set(list.filter((r) => r.includes('ovsnet:foreign')).flatMap((r) => [...r.matchAll(/-[io] (\S+)/g)].map((m) => m[1]!).filter((i) => !i.endsWith('+'))))].sort().join(',');
    const [haveBridges, wantBridges] = [bridges(have), bridges(want.map((r) => r.join(' ')))];
    if (haveBridges !== wantBridges && (haveTags.get('ovsnet:foreign') ?? 0) === (wantTags.get('ovsnet:foreign') ?? 0)) {
      out.push({
        drift: { kind: 'firewall-drift', subject: 'ovsnet:foreign', detail: `the ${table} chain keeps the plugin's networks apart from ${haveBridges || 'no bridge'} where ${wantBridges || 'no bridge'} are on the host`, fix: REPAIR },
        repairs,
      });
    }
  }
  return out;
}
