import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { givesDefaultRoute, hasHostGateway, parseNetworkOptions } from '../../src/domain/options.js';

const defaults = { bridge: 'ovs0', mtu: 1500 };
const flags = { internal: false, ipv6: false };
const parse = (generic: Record<string, unknown>, f = flags) => parseNetworkOptions(generic, f, defaults);

describe('network options', () => {
  it('defaults to an untagged nat network on the default bridge', () => {
    assert.deepEqual(parse({}), { bridge: 'ovs0', vlan: undefined, mtu: 1500, gatewayMode: 'nat', internal: false, ipv6: false });
  });

  it('reads every option', () => {
    const spec = parse({ vlan: '860', bridge: 'br-ext', mtu: '9000', gateway_mode: 'external' });
    assert.deepEqual(spec, { bridge: 'br-ext', vlan: 860, mtu: 9000, gatewayMode: 'external', internal: false, ipv6: false });
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
    [{ foo: 'bar' }, /^unknown option foo=bar; valid options: bridge, gateway_mode, mtu, vlan$/],
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
  });

  it('says where the gateway lives and whether containers get a default route', () => {
    assert.ok(hasHostGateway(parse({})) && givesDefaultRoute(parse({})));
    assert.ok(hasHostGateway(parse({ gateway_mode: 'routed' })));
    assert.ok(!hasHostGateway(parse({ gateway_mode: 'external' })) && givesDefaultRoute(parse({ gateway_mode: 'external' })));
    assert.ok(!givesDefaultRoute(parse({ gateway_mode: 'isolated' })));
    assert.ok(!givesDefaultRoute(parse({}, { internal: true, ipv6: false })));
  });
});
