import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeCreateEndpoint, decodeCreateNetwork, decodeJoin, decodeNetworkRef, macFromBase64 } from '../../src/protocol/network.js';
import { decodeRequestAddress, decodeRequestPool } from '../../src/protocol/ipam.js';

const NET = '1'.repeat(64);
const EP = '2'.repeat(64);

describe('request decoders', () => {
  it('decodes CreateNetwork exactly as Docker sends it', () => {
    const req = decodeCreateNetwork({
      NetworkID: NET,
      Options: {
        'com.docker.network.enable_ipv6': false,
        'com.docker.network.generic': { foo: 'bar', vlan: '100' },
      },
      IPv4Data: [{ AddressSpace: 'local', AuxAddresses: { a: '10.201.0.5/24' }, Gateway: '10.201.0.1/24', Pool: '10.201.0.0/24' }],
      IPv6Data: [],
    });
    assert.deepEqual(req, {
      networkId: NET,
      generic: { foo: 'bar', vlan: '100' },
      ipv6: false,
      ipv4: true,
      internal: false,
      ipv4Data: [{ addressSpace: 'local', pool: '10.201.0.0/24', gateway: '10.201.0.1/24', auxAddresses: { a: '10.201.0.5/24' } }],
      ipv6Data: [],
    });
  });

  it("takes a swarm network's id (25 characters of base 36, the same on every node) as a network's", () => {
    assert.equal(decodeCreateNetwork({ NetworkID: 'q8ztcl8r4x0xw1kmvfj5o2e7n' }).networkId, 'q8ztcl8r4x0xw1kmvfj5o2e7n');
    assert.equal(decodeNetworkRef({ NetworkID: 'q8ztcl8r4x0xw1kmvfj5o2e7n' }).networkId, 'q8ztcl8r4x0xw1kmvfj5o2e7n');
  });

  it('names the field that is wrong', () => {
    assert.throws(() => decodeCreateNetwork({ NetworkID: 'abc' }), /field NetworkID must be a network id \(Docker's: 64 lower-case hex characters; a swarm's: 25 lower-case letters and digits\)/);
    assert.throws(() => decodeCreateNetwork({ NetworkID: 'Q8ZTCL8R4X0XW1KMVFJ5O2E7N' }), /field NetworkID must be a network id/);
    assert.throws(() => decodeCreateEndpoint({ NetworkID: NET, EndpointID: 'q8ztcl8r4x0xw1kmvfj5o2e7n' }), /field EndpointID must be a Docker id/);
    assert.throws(() => decodeCreateNetwork({ NetworkID: NET, IPv4Data: {} }), /field IPv4Data must be an array/);
    assert.throws(() => decodeCreateNetwork({ NetworkID: NET, IPv4Data: [{ Pool: 5 }] }), /field Pool must be a non-empty string/);
    assert.throws(() => decodeCreateNetwork([]), /field body must be a JSON object/);
    assert.throws(() => decodeRequestPool({ AddressSpace: 'local', V6: 'yes' }), /field V6 must be a boolean/);
    assert.throws(() => decodeRequestPool({ Pool: '10.0.0.0/24' }), /field AddressSpace must be a non-empty string/);
  });

  it('reads the endpoint MAC from base64 of the raw bytes', () => {
    assert.equal(macFromBase64('AkIKyQCW'), '02:42:0a:c9:00:96');
    assert.throws(() => macFromBase64('AkIK'), /base64 of 6 bytes/);
    const req = decodeCreateEndpoint({
      NetworkID: NET,
      EndpointID: EP,
      Interface: { Address: '10.0.0.2/24', AddressIPv6: '', MacAddress: '' },
      Options: { 'com.docker.network.endpoint.macaddress': 'AkIKyQCW', 'com.docker.network.portmap': [] },
    });
    assert.equal(req.optionMac, '02:42:0a:c9:00:96');
    assert.equal(req.address, '10.0.0.2/24');
    assert.deepEqual(req.driverOptions, {}, "Docker's own options are not the user's");
  });

  it("reads Docker 28's enable_ipv4, and the user's --driver-opt endpoint options", () => {
    const off = decodeCreateNetwork({ NetworkID: NET, Options: { 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': true }, IPv4Data: [], IPv6Data: [] });
    assert.deepEqual([off.ipv4, off.ipv6], [false, true]);
    const ep = decodeCreateEndpoint({ NetworkID: NET, EndpointID: EP, Interface: {}, Options: { rate: '10', 'com.docker.network.endpoint.exposedports': [] } });
    assert.deepEqual(ep.driverOptions, { rate: '10' });
    assert.throws(() => decodeCreateEndpoint({ NetworkID: NET, EndpointID: EP, Options: { rate: 10 } }), /invalid value 10 for endpoint option rate: must be a string/);
  });

  it('tells gateway requests from the rest', () => {
    assert.deepEqual(decodeRequestAddress({ PoolID: 'p', Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } }), {
      poolId: 'p',
      address: '',
      gateway: true,
      endpointName: '',
    });
    assert.equal(decodeRequestAddress({ PoolID: 'p', Address: '10.0.0.5', Options: null }).gateway, false);
    const named = decodeRequestAddress({ PoolID: 'p', Address: '', Options: { 'com.docker.network.endpoint.name': 'web' } });
    assert.deepEqual([named.gateway, named.endpointName], [false, 'web'], 'Docker 29 names the endpoint');
    assert.throws(() => decodeRequestAddress({ PoolID: 'p', Options: { RequestAddressType: 'x' } }), /RequestAddressType/);
  });

  it('accepts a Join with the sandbox key and options', () => {
    const req = decodeJoin({ NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/abc', Options: { 'com.docker.network.portmap': [] } });
    assert.equal(req.sandboxKey, '/var/run/docker/netns/abc');
  });
});
