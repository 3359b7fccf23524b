/**
 * Property-based tests (fast-check): whatever arrives on the socket, the
 * decoders answer with a typed value or a BadRequest, never anything else;
 * the allocator and the IPAM driver keep their invariants under any sequence
 * of requests and releases; the HTTP app never fails with an internal error.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import request from 'supertest';
import { PluginError } from '../../src/errors.js';
import { formatCidr, formatIp, parseCidr, parseIp } from '../../src/domain/cidr.js';
import { nextFree } from '../../src/domain/allocator.js';
import { parseNetworkOptions } from '../../src/domain/options.js';
import * as network from '../../src/protocol/network.js';
import * as ipam from '../../src/protocol/ipam.js';
import { createApp } from '../../src/http/app.js';
import { silentLogger } from '../../src/log.js';
import { State } from '../../src/driver/state.js';
import { MemoryStore } from '../fakes/index.js';
import { world } from './setup.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

function onlyBadRequest(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof PluginError && err.kind === 'BadRequest', `unexpected ${String(err)}`);
  }
}

/** JSON values shaped somewhat like requests, so that decoders get past their first checks. */
const id = fc.stringMatching(/^[0-9a-f]{64}$/);
const cidrish = fc.oneof(fc.constantFrom('10.0.0.0/24', '10.0.0.1/24', 'fd00::/64', '10.0.0.0/33', '', 'x/y'), fc.string());
const requestLike = fc.record(
  {
    NetworkID: fc.oneof(id, fc.string(), fc.integer()),
    EndpointID: fc.oneof(id, fc.string(), fc.constant(null)),
    PoolID: fc.oneof(fc.string(), fc.integer()),
    AddressSpace: fc.oneof(fc.constantFrom('local', 'global'), fc.string()),
    Pool: cidrish,
    SubPool: cidrish,
    Address: fc.oneof(fc.constantFrom('10.0.0.5', 'fd00::5', ''), fc.string()),
    V6: fc.oneof(fc.boolean(), fc.string()),
    Options: fc.oneof(fc.constant(null), fc.jsonValue(), fc.dictionary(fc.string(), fc.jsonValue())),
    Interface: fc.oneof(fc.constant(null), fc.record({ Address: cidrish, MacAddress: fc.string() }, { requiredKeys: [] })),
    IPv4Data: fc.oneof(fc.jsonValue(), fc.array(fc.record({ Pool: cidrish, Gateway: cidrish, AddressSpace: fc.string() }, { requiredKeys: [] }))),
  },
  { requiredKeys: [] },
);
const anyBody = fc.oneof(fc.jsonValue(), requestLike);

describe('fuzz: decoders', () => {
  const decoders = [
    network.decodeCreateNetwork,
    network.decodeNetworkRef,
    network.decodeEndpointRef,
    network.decodeCreateEndpoint,
    network.decodeJoin,
    network.decodeProgram,
    ipam.decodeRequestPool,
    ipam.decodePoolRef,
    ipam.decodeRequestAddress,
    ipam.decodeReleaseAddress,
  ];
  for (const decode of decoders) {
    it(`${decode.name} returns a value or a BadRequest for any JSON`, () => {
      fc.assert(fc.property(anyBody, (body) => onlyBadRequest(() => decode(body))), { numRuns: RUNS });
    });
  }

  it('network options: a spec or a BadRequest for any dictionary', () => {
    const values = fc.oneof(fc.constantFrom('860', '0', 'vxlan', 'gre', '10.0.0.1,10.0.0.2', 'nat', 'eth1', ''), fc.string(), fc.jsonValue());
    const keys = fc.oneof(fc.constantFrom('vlan', 'mtu', 'bridge', 'gateway_mode', 'mode', 'vni', 'key', 'peers', 'uplink'), fc.string());
    fc.assert(
      fc.property(fc.dictionary(keys, values), fc.boolean(), fc.boolean(), (generic, internal, ipv6) =>
        onlyBadRequest(() => parseNetworkOptions(generic, { internal, ipv6 }, { bridge: 'ovs0' })),
      ),
      { numRuns: RUNS },
    );
  });
});

describe('fuzz: address math and allocator', () => {
  it('canonical text survives a round trip, for both families', () => {
    const v4 = fc.tuple(fc.bigInt({ min: 0n, max: (1n << 32n) - 1n }), fc.integer({ min: 0, max: 32 })).map(([v, p]) => ({ family: 4 as const, v, p }));
    const v6 = fc.tuple(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 128 })).map(([v, p]) => ({ family: 6 as const, v, p }));
    fc.assert(
      fc.property(fc.oneof(v4, v6), ({ family, v, p }) => {
        const text = formatIp({ family, value: v });
        assert.equal(parseIp(text)?.value, v);
        const bits = family === 4 ? 32 : 128;
        const network = (v >> BigInt(bits - p)) << BigInt(bits - p);
        const cidr = formatCidr({ family, network, prefix: p });
        assert.equal(formatCidr(parseCidr(cidr)!), cidr);
      }),
      { numRuns: RUNS },
    );
  });

  it('nextFree returns a free address in bounds, or nothing only when all are taken', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.integer({ min: 0, max: 63 })), fc.option(fc.integer({ min: 0, max: 70 })), (size, takenList, cursor) => {
        const bounds = { family: 4 as const, first: 100n, last: 100n + BigInt(size) - 1n };
        const taken = new Set(takenList.filter((t) => t < size).map((t) => 100n + BigInt(t)));
        const value = nextFree(bounds, (v) => taken.has(v), taken.size, cursor === null ? undefined : 100n + BigInt(cursor));
        if (value === undefined) assert.equal(taken.size, size);
        else {
          assert.ok(value >= bounds.first && value <= bounds.last);
          assert.ok(!taken.has(value));
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe('fuzz: IPAM driver against a model', () => {
  it('never hands out an address twice, keeps the store equal to memory, exhausts only when full', async () => {
    const command = fc.oneof(
      fc.record({ op: fc.constant('dynamic' as const) }),
      fc.record({ op: fc.constant('static' as const), host: fc.integer({ min: 0, max: 15 }) }),
      fc.record({ op: fc.constant('release' as const), host: fc.integer({ min: 0, max: 15 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(command, { maxLength: 40 }), async (commands) => {
        const store = new MemoryStore();
        const w = await world({ store });
        const { PoolID } = await w.ipam.requestPool({ addressSpace: 'local', pool: '10.9.0.0/28', subPool: '', options: {}, v6: false });
        const held = new Set<string>(); // the model: 14 usable addresses, .1 to .14
        for (const c of commands) {
          const address = 'host' in c ? `10.9.0.${c.host}` : '';
          if (c.op === 'release') {
            await w.ipam.releaseAddress({ poolId: PoolID, address });
            held.delete(address);
            continue;
          }
          try {
            const answer = (await w.ipam.requestAddress({ poolId: PoolID, address, gateway: false })).Address.split('/')[0]!;
            if (c.op === 'dynamic') assert.ok(!held.has(answer), `dynamic ${answer} was already held`);
            else assert.equal(answer, address);
            held.add(answer);
          } catch (err) {
            const e = err as PluginError;
            if (c.op === 'dynamic') assert.deepEqual([e.kind, held.size], ['Exhausted', 14], e.message);
            else assert.ok(['BadRequest'].includes(e.kind) && (c.host === 0 || c.host === 15), `static ${address}: ${e.message}`);
          }
        }
        assert.deepEqual([...w.state.addressesOf(PoolID).keys()].sort(), [...held].sort());
        const reloaded = await State.open(store);
        assert.deepEqual([...reloaded.addressesOf(PoolID).keys()].sort(), [...held].sort(), 'the store holds what memory holds');
      }),
      { numRuns: Math.max(50, Math.floor(RUNS / 3)) },
    );
  });
});

describe('fuzz: the HTTP app', () => {
  it('answers any body on any call with 200 or a classified error in JSON, never an internal error (500)', async () => {
    const w = await world();
    const app = createApp({ network: w.network, ipam: w.ipam, state: w.state, log: silentLogger });
    const calls = ['NetworkDriver.CreateNetwork', 'NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'NetworkDriver.Leave', 'NetworkDriver.DeleteEndpoint', 'NetworkDriver.EndpointOperInfo', 'NetworkDriver.DeleteNetwork', 'IpamDriver.RequestPool', 'IpamDriver.RequestAddress', 'IpamDriver.ReleaseAddress', 'IpamDriver.ReleasePool'];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...calls), fc.oneof(anyBody.map((b) => JSON.stringify(b)), fc.string()), async (call, body) => {
        const res = await request(app).post(`/${call}`).send(body).unset('Content-Type');
        // 507 is a classified error too: automatic subnets can run out over thousands of calls.
        assert.ok([200, 400, 404, 409, 413, 507].includes(res.status), `${call} ${body.slice(0, 80)} -> ${res.status} ${res.text}`);
        if (res.status !== 200) assert.ok(typeof res.body.Err === 'string' && res.body.Err === res.body.Error);
      }),
      { numRuns: Math.max(50, Math.floor(RUNS / 3)) },
    );
  });
});
