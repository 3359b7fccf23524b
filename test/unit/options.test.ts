import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { givesDefaultRoute, hasHostGateway, normaliseSpec, parseNetworkOptions, weakenedProtections } from '../../src/domain/options.js';

const defaults = { bridge: 'ovs0' };
const flags = { internal: false, ipv6: false };
const parse = (generic: Record<string, unknown>, f = flags) => parseNetworkOptions(generic, f, defaults);

function pick(spec: ReturnType<typeof parse>): { antiSpoofing: boolean; rate: unknown } {
  assert.ok(spec.mode !== 'ovn');
  return { antiSpoofing: spec.antiSpoofing, rate: spec.rate };
}

describe('network options', () => {
  it('defaults to an untagged nat network on the default bridge', () => {
    assert.deepEqual(parse({}), {
      mode: 'vlan',
      bridge: 'ovs0',
      vlan: undefined,
      mtu: undefined,
      gatewayMode: 'nat',
      internal: false,
      ipv6: false,
      allowRa: false,
      allowDhcpServer: false,
      allowHostOverlap: false,
      antiSpoofing: true,
      rate: undefined,
      uplink: undefined,
    });
  });

  it('reads every option', () => {
    const spec = parse({ vlan: '860', bridge: 'br-ext', mtu: '9000', gateway_mode: 'external', uplink: 'eth1', allow_ra: 'true', allow_dhcp_server: 'true', allow_host_overlap: 'true' });
    assert.deepEqual(spec, {
      mode: 'vlan',
      bridge: 'br-ext',
      vlan: 860,
      mtu: 9000,
      gatewayMode: 'external',
      internal: false,
      ipv6: false,
      allowRa: true,
      allowDhcpServer: true,
      allowHostOverlap: true,
      antiSpoofing: true,
      rate: undefined,
      uplink: 'eth1',
    });
    const overlay = parse({ mode: 'vxlan', vni: '5001', peers: '10.250.0.2, 10.250.0.3,10.250.0.2' });
    assert.ok(overlay.mode === 'vxlan', 'an overlay spec');
    assert.equal(overlay.tunnelKey, 5001);
    assert.deepEqual(overlay.peers, ['10.250.0.2', '10.250.0.3'], 'trimmed, canonical, without duplicates');
    const gre = parse({ mode: 'gre', key: '4294967295' });
    assert.ok(gre.mode === 'gre');
    assert.equal(gre.tunnelKey, 4294967295, 'the largest GRE key');
  });

  it('names the options that weaken what guards a network, as an operator gave them; none by default, and none for an older spec', () => {
    assert.deepEqual(weakenedProtections(parse({})), []);
    assert.deepEqual(weakenedProtections(parse({ anti_spoofing: 'false', allow_ra: 'true', allow_dhcp_server: 'true' })), ['anti_spoofing=false', 'allow_ra=true', 'allow_dhcp_server=true']);
    assert.deepEqual(weakenedProtections(parseNetworkOptions({ mode: 'ovn', allow_dhcp_server: 'true' }, flags, { bridge: 'ovs0', ovn: { bridge: 'br-int' } })), ['allow_dhcp_server=true']);
    const older = normaliseSpec({ mode: 'vlan', bridge: 'ovs0', gatewayMode: 'nat', internal: false, ipv6: false } as never);
    assert.deepEqual([weakenedProtections(older), older.allowRa, older.allowDhcpServer], [[], false, false], 'a network stored before these options gets the guard whole');
  });

  it('reads anti_spoofing, rate and burst, with a quarter second of the rate as the default burst', () => {
    assert.deepEqual(pick(parse({ anti_spoofing: 'false' })), { antiSpoofing: false, rate: undefined });
    assert.deepEqual(pick(parse({ rate: '20' })), { antiSpoofing: true, rate: { mbit: 20, burstKbit: 5000 } });
    assert.deepEqual(pick(parse({ mode: 'vxlan', vni: '5', rate: '100', burst: '2000' })), { antiSpoofing: true, rate: { mbit: 100, burstKbit: 2000 } });
    assert.deepEqual(pick(parse({ rate: '1' })).rate, { mbit: 1, burstKbit: 250 });
    const ovn = { bridge: 'ovs0', ovn: { bridge: 'br-int' } };
    assert.throws(() => parseNetworkOptions({ mode: 'ovn', anti_spoofing: 'false' }, flags, ovn), /option anti_spoofing applies to mode=vlan, vxlan or gre, not mode=ovn: an OVN network's logical ports always carry port security/);
    assert.throws(() => parseNetworkOptions({ mode: 'ovn', rate: '5' }, flags, ovn), /option rate applies to mode=vlan, vxlan or gre, not mode=ovn/);
  });

  it("accepts Docker's own MTU option as a synonym", () => {
    assert.equal(parse({ 'com.docker.network.driver.mtu': '1400' }).mtu, 1400);
    assert.throws(() => parse({ 'com.docker.network.driver.mtu': '1400', mtu: '1300' }), /given twice/);
  });

  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ vlan: '0' }, /^invalid value "0" for option vlan: must be an integer from 1 to 4094 \(leave vlan out for an untagged network\)$/],
    [{ vlan: '4095' }, /option vlan: must be an integer from 1 to 4094/],
    [{ vlan: '86a' }, /invalid value "86a" for option vlan/],
    [{ vlan: ' 86' }, /invalid value " 86" for option vlan/],
    [{ vlan: '0x10' }, /option vlan/],
    [{ mtu: '67' }, /^invalid value "67" for option mtu: must be an integer from 68 to 65535$/],
    [{ mtu: '70000' }, /option mtu/],
    [{ gateway_mode: 'bridge' }, /^invalid value "bridge" for option gateway_mode: valid values are nat, routed, external, isolated$/],
    [{ bridge: 'br/0' }, /^invalid value "br\/0" for option bridge: an OVS bridge name is 1 to 15 characters/],
    [{ bridge: 'a-very-long-bridge' }, /option bridge/],
    [{ allow_ra: 'yes' }, /^invalid value "yes" for option allow_ra: valid values are true and false$/],
    [{ allow_dhcp_server: '1' }, /^invalid value "1" for option allow_dhcp_server: valid values are true and false$/],
    [{ foo: 'bar' }, /^unknown option foo=bar; valid options: allow_dhcp_server, allow_host_overlap, allow_ra, anti_spoofing, bridge, burst, gateway_mode, key, mode, mtu, ovn_network, ovn_router, peers, rate, uplink, vlan, vni$/],
    [{ mode: 'geneve' }, /^invalid value "geneve" for option mode: valid values are vlan, vxlan, gre, ovn$/],
    [{ mode: 'vxlan' }, /^mode=vxlan needs -o vni=<1-16777215>: the same value on every host of the network$/],
    [{ mode: 'gre' }, /^mode=gre needs -o key=<0-4294967295>/],
    [{ mode: 'vxlan', vni: '16777216' }, /^invalid value "16777216" for option vni: must be an integer from 1 to 16777215$/],
    [{ vni: '5' }, /^option vni applies to mode=vxlan, not mode=vlan$/],
    [{ mode: 'gre', key: '5', vni: '5' }, /^option vni applies to mode=vxlan, not mode=gre$/],
    [{ peers: '10.0.0.1' }, /^option peers applies to mode=vxlan or gre, not mode=vlan$/],
    [{ mode: 'vxlan', vni: '5', peers: '10.0.0.1,host-b' }, /^invalid value "10.0.0.1,host-b" for option peers: "host-b" is not an IPv4 or IPv6 address/],
    [{ mode: 'vxlan', vni: '5', uplink: 'eth1' }, /^option uplink applies to mode=vlan/],
    [{ mode: 'vxlan', vni: '5', gateway_mode: 'routed' }, /^invalid value "routed" for option gateway_mode: an overlay spans hosts/],
    [{ uplink: 'eth 1' }, /^invalid value "eth 1" for option uplink/],
    [{ anti_spoofing: 'off' }, /^invalid value "off" for option anti_spoofing: valid values are true and false$/],
    [{ rate: '0' }, /^invalid value "0" for option rate: must be an integer from 1 to 100000 \(Mbit\/s\)$/],
    [{ rate: '1.5' }, /^invalid value "1.5" for option rate/],
    [{ rate: '10', burst: '10' }, /^invalid value "10" for option burst: must be an integer from 64 to 10000000 \(kilobits\)$/],
    [{ burst: '1000' }, /^invalid value "1000" for option burst: burst goes with rate: give -o rate=<Mbit\/s> as well$/],
    [{ vlan: 860 }, /invalid value 860 for option vlan: must be a string/],
  ];
  for (const [generic, message] of cases) {
    it(`rejects ${JSON.stringify(generic)} naming the option, the value and what is valid`, () => {
      assert.throws(() => parse(generic), (err: Error & { kind?: string }) => {
        assert.equal(err.kind, 'BadRequest');
        assert.match(err.message, message);
        return true;
      });
    });
  }

  it('raises the minimum MTU for IPv6 networks', () => {
    assert.throws(() => parse({ mtu: '1000' }, { internal: false, ipv6: true }), /from 1280 to 65535 \(IPv6 needs at least 1280\)/);
    assert.equal(parse({ mtu: '1000' }).mtu, 1000);
    assert.equal(parse({}).mtu, undefined, 'no mtu means: the default, or what the underlay allows');
  });

  it('says where the gateway lives and whether containers get a default route', () => {
    assert.ok(hasHostGateway(parse({})) && givesDefaultRoute(parse({})));
    assert.ok(hasHostGateway(parse({ gateway_mode: 'routed' })));
    assert.ok(!hasHostGateway(parse({ gateway_mode: 'external' })) && givesDefaultRoute(parse({ gateway_mode: 'external' })));
    assert.ok(!givesDefaultRoute(parse({ gateway_mode: 'isolated' })));
    assert.ok(!givesDefaultRoute(parse({}, { internal: true, ipv6: false })));
    assert.ok(!hasHostGateway(parse({ mode: 'vxlan', vni: '1' })), 'an overlay never has its gateway on the host');
  });
});
