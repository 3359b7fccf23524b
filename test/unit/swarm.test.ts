/**
 * This host's settings for swarm networks (config-only networks of OVN mode) against the switch their subnet
 * already is in the northbound database: `ovsnet doctor` names the first difference before a task is refused.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DockerNetwork } from '../../src/domain/drift.js';
import { type OvnSpec, parseNetworkOptions } from '../../src/domain/options.js';
import { NB, type NbSwitch, defaultSwitchName, encodeConfig, sharedConfig } from '../../src/domain/ovn.js';
import { REFUSAL_KEPT_MS, type Refusals, configOnlyDrift, configOnlySubnets, keepRefusal, refusalDrift } from '../../src/domain/swarm.js';

const DEFAULTS = { bridge: 'ovs0', ovn: { bridge: 'br-int' } };
const SUBNET = '10.70.0.0/24';

/** The switch of 10.70.0.0/24 as host h1 made it for a network of these options. */
function switchOf(options: Record<string, string>, range = SUBNET): NbSwitch {
  const spec = parseNetworkOptions(options, { internal: false, ipv6: false }, DEFAULTS) as OvnSpec;
  const config = sharedConfig(spec, defaultSwitchName(SUBNET), [{ addressSpace: 'local', pool: SUBNET, gateway: '10.70.0.1', auxAddresses: {} }], new Map([[SUBNET, range]]));
  return { uuid: 'u1', name: defaultSwitchName(SUBNET), externalIds: { [NB.subnet]: SUBNET, [NB.config]: encodeConfig(config), [NB.createdBy]: 'h1' } };
}

function configOnly(name: string, options: Record<string, string>, subnet: { pool: string; gateway?: string; range?: string } = { pool: SUBNET }): DockerNetwork {
  return { id: name.padEnd(64, '0'), name, subnets: [], auxAddresses: [], endpoints: new Map(), configOnly: { options, ipv6: false, subnets: [{ ...subnet, aux: {} }] } };
}

describe('swarm: config-only networks of OVN mode against their switch', () => {
  const sw = switchOf({ mode: 'ovn' });

  it('the same settings (the gateway left to IPAM) are no difference, nor is a subnet with no switch yet, nor a network of another mode', () => {
    const docker = [
      configOnly('web-config', { mode: 'ovn' }),
      configOnly('gw-config', { mode: 'ovn' }, { pool: SUBNET, gateway: '10.70.0.1' }),
      configOnly('new-config', { mode: 'ovn' }, { pool: '10.71.0.0/24' }),
      configOnly('vlan-config', { vlan: '871' }, { pool: SUBNET, range: '10.70.0.64/26' }),
    ];
    assert.deepEqual(configOnlySubnets(docker), [SUBNET, '10.71.0.0/24']);
    assert.deepEqual(configOnlyDrift(docker, [sw], DEFAULTS), []);
  });

  it('names the first difference, the value the switch has, and the host that made it', () => {
    const drift = configOnlyDrift([
      configOnly('odd-range', { mode: 'ovn' }, { pool: SUBNET, range: '10.70.0.128/25' }),
      configOnly('odd-router', { mode: 'ovn', ovn_router: 'edge' }),
      configOnly('odd-gateway', { mode: 'ovn' }, { pool: SUBNET, gateway: '10.70.0.254' }),
    ], [sw], DEFAULTS);
    assert.deepEqual(drift.map((d) => [d.kind, d.subject]), [['ovn-config-differs', 'odd-range'], ['ovn-config-differs', 'odd-router'], ['ovn-config-differs', 'odd-gateway']]);
    assert.match(drift[0]!.detail, /^config-only network odd-range \(the settings this host gives the swarm networks made --config-from it\): subnet 10\.70\.0\.0\/24 is already the OVN network .* \(made by host h1\) with the ip-range of 10\.70\.0\.0\/24 10\.70\.0\.0\/24; this host asked for 10\.70\.0\.128\/25/);
    assert.match(drift[1]!.detail, /the router none; this host asked for edge/);
    assert.match(drift[2]!.detail, /the gateway of 10\.70\.0\.0\/24 10\.70\.0\.1; this host asked for 10\.70\.0\.254/);
    assert.match(drift[0]!.fix, /^docker network rm odd-range; docker network create --config-only \.\.\. odd-range again/);
  });

  it("compares a gateway left to IPAM as the one IPAM gives (the subnet's first address), and an IPv6 subnet listed first with the IPv4 one the network is known by", () => {
    const made254 = { ...sw, externalIds: { ...sw.externalIds, [NB.config]: sw.externalIds[NB.config]!.replace('"10.70.0.1"', '"10.70.0.254"') } };
    const [d] = configOnlyDrift([configOnly('web-config', { mode: 'ovn' })], [made254], DEFAULTS);
    assert.match(d?.detail ?? '', /the gateway of 10\.70\.0\.0\/24 10\.70\.0\.254; this host asked for 10\.70\.0\.1/);
    const dual: DockerNetwork = { ...configOnly('dual', { mode: 'ovn' }), configOnly: { options: { mode: 'ovn' }, ipv6: true, subnets: [{ pool: 'fd70::/64', aux: {} }, { pool: SUBNET, range: '10.70.0.128/25', aux: {} }] } };
    assert.deepEqual(configOnlySubnets([dual]), [SUBNET]);
    assert.deepEqual(configOnlyDrift([dual], [sw], DEFAULTS).map((x) => x.subject), ['dual']);
  });

  it('an option the plugin would refuse is a difference too, in the words of the refusal', () => {
    const [d] = configOnlyDrift([configOnly('bad-config', { mode: 'ovn', colour: 'blue' })], [sw], DEFAULTS);
    assert.equal(d?.kind, 'ovn-config-differs');
    assert.match(d!.detail, /unknown option colour=blue; valid options: /);
  });
});

describe('swarm: networks this host refused to make when a task came', () => {
  const NET = 'q8ztcl8r4x0xw1kmvfj5o2e7n';

  it('are said while swarm keeps asking, with the refusal, and forgotten once it stopped for REFUSAL_KEPT_MS', () => {
    const refusals: Refusals = new Map();
    keepRefusal(refusals, NET, 'subnet 10.70.0.0/24 is already the OVN network ovsnet-10.70.0.0_24 (made by host h1) with the ip-range ...', 1_000);
    const [d] = refusalDrift(refusals, 2_000);
    assert.equal(d?.kind, 'swarm-network-refused');
    assert.equal(d?.subject, 'q8ztcl8r4x0x');
    assert.match(d!.detail, /^swarm network q8ztcl8r4x0x could not be made on this host when a task came \(last at 1970-01-01T00:00:01\.000Z\): subnet 10\.70\.0\.0\/24 is already/);
    assert.deepEqual(refusalDrift(refusals, 1_000 + REFUSAL_KEPT_MS), [], 'not said once swarm stopped asking');
    keepRefusal(refusals, 'other0000000000000000000o', 'x', 1_000 + REFUSAL_KEPT_MS);
    assert.deepEqual([...refusals.keys()], ['other0000000000000000000o'], 'and dropped when another is kept');
  });
});
