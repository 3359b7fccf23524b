import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import fc from 'fast-check';
import { JsonStream, JsonStreamError } from '../../src/adapters/json-stream.js';
import { OvsdbClient } from '../../src/adapters/ovsdb.js';
import { readMap, readOptional, readSet } from '../../src/adapters/ovsdb-datum.js';
import { parseOvsdbRemote as parseOvsdbAddress } from '../../src/domain/remotes.js';
import { KeyedMutex } from '../../src/driver/locks.js';
import { CommandError, run } from '../../src/adapters/exec.js';
import { createLogger, silentLogger } from '../../src/log.js';

describe('settings', () => {
  it('has defaults for everything', () => {
    const c = loadConfig({});
    assert.equal(c.socketPath, '/run/docker/plugins/ovs.sock');
    assert.equal(c.bridge, 'ovs0');
    assert.equal(c.datapath, 'auto');
    assert.equal(c.mtu, 1500);
    assert.equal(c.defaultPools.length, 2);
    assert.ok(Object.isFrozen(c));
  });

  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ OVSNET_SOCKET: 'ovs.sock' }, /invalid OVSNET_SOCKET="ovs.sock": must be an absolute path ending in .sock/],
    [{ OVSNET_DATAPATH: 'kernel' }, /invalid OVSNET_DATAPATH="kernel": valid values are auto, system, netdev/],
    [{ OVSNET_BRIDGE: 'br 0' }, /invalid OVSNET_BRIDGE/],
    [{ OVSNET_OVSDB: '/var/run/db.sock' }, /use unix:<path>, tcp:<host>:<port> or ssl:<host>:<port>/],
    [{ OVSNET_LOG_LEVEL: 'trace' }, /valid values are debug, info, warn, error/],
    [{ OVSNET_DEFAULT_POOLS: '10.200.0.0/16' }, /invalid OVSNET_DEFAULT_POOLS/],
    [{ OVSNET_DEFAULT_POOLS: '10.200.0.1/16:24' }, /invalid OVSNET_DEFAULT_POOLS/],
    [{ OVSNET_DEFAULT_POOLS: '10.200.0.0/16:8' }, /invalid OVSNET_DEFAULT_POOLS/],
    [{ OVSNET_MTU: '1e3' }, /invalid OVSNET_MTU/],
    [{ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_PROBE: '15' }, /^invalid OVSNET_OVN_PROBE="15": a silent member is left within twice the probe, which must be less than OVSNET_OVN_TIMEOUT \(30 s\) .*: at most 14, or 0 for no probe$/],
    [{ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_PROBE: '-1' }, /^invalid OVSNET_OVN_PROBE="-1": must be a whole number of seconds from 0/],
    [{ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_EXTERNAL: 'physnet,192.0.2.0/24' }, /^invalid OVSNET_OVN_EXTERNAL="physnet,192.0.2.0\/24": <physical network name>,<IPv4 subnet of \/30 or larger>,<next hop in that subnet>/],
    [{ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_EXTERNAL: 'physnet,192.0.2.0/24,198.51.100.1', OVSNET_OVN_GATEWAYS: 'gw1' }, /^invalid OVSNET_OVN_EXTERNAL=.*next hop in that subnet/],
    [{ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_EXTERNAL: 'physnet,192.0.2.0/24,192.0.2.1' }, /^invalid OVSNET_OVN_GATEWAYS="": name at least one gateway chassis/],
    [{ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_EXTERNAL: 'physnet,192.0.2.0/24,192.0.2.1', OVSNET_OVN_GATEWAYS: 'gw1:99999' }, /^invalid OVSNET_OVN_GATEWAYS="gw1:99999": <chassis name>\[:<priority 0-32767>\]/],
    [{ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_EXTERNAL: 'physnet,192.0.2.0/24,192.0.2.1,192.0.2.200-192.0.2.255', OVSNET_OVN_GATEWAYS: 'gw1' }, /the addresses routers may take must be <first>-<last>, both usable addresses of 192\.0\.2\.0\/24/],
    [{ OVSNET_OVN_GATEWAYS: 'gw1' }, /^invalid OVSNET_OVN_GATEWAYS="gw1": gateway chassis need OVSNET_OVN_EXTERNAL too/],
    [{ OVSNET_OVN_NB: 'ssl:10.0.0.1:6641' }, /^invalid OVSNET_OVN_NB="ssl:10\.0\.0\.1:6641": ssl: remotes need OVSNET_OVN_SSL_KEY, OVSNET_OVN_SSL_CERT and OVSNET_OVN_SSL_CA/],
    [{ OVSNET_OVN_NB: 'ssl:10.0.0.1:6641', OVSNET_OVN_SSL_KEY: '/k.pem', OVSNET_OVN_SSL_CERT: '/c.pem' }, /^invalid OVSNET_OVN_SSL_CA="": give all of OVSNET_OVN_SSL_KEY, OVSNET_OVN_SSL_CERT and OVSNET_OVN_SSL_CA, or none/],
    [{ OVSNET_OVN_NB: 'ssl:10.0.0.1:6641', OVSNET_OVN_SSL_KEY: 'k.pem', OVSNET_OVN_SSL_CERT: '/c.pem', OVSNET_OVN_SSL_CA: '/ca.pem' }, /^invalid OVSNET_OVN_SSL_KEY="k\.pem": must be the absolute path of a PEM file/],
  ];

  it('reads the TLS files for ssl: remotes; a file that cannot be read is named when the client is made', () => {
    const c = loadConfig({ OVSNET_OVN_NB: 'ssl:10.0.0.1:6641,ssl:[fd00::1]:6641', OVSNET_OVN_SSL_KEY: '/etc/ovn/k.pem', OVSNET_OVN_SSL_CERT: '/etc/ovn/c.pem', OVSNET_OVN_SSL_CA: '/etc/ovn/ca.pem' });
    assert.deepEqual(c.ovn?.tls, { key: '/etc/ovn/k.pem', cert: '/etc/ovn/c.pem', ca: '/etc/ovn/ca.pem' });
    assert.throws(
      () => new OvsdbClient({ address: c.ovn!.nb, log: silentLogger, tls: c.ovn!.tls, tlsSettings: 'OVSNET_OVN_SSL_KEY, OVSNET_OVN_SSL_CERT and OVSNET_OVN_SSL_CA' }),
      { code: 'InvalidSetting', message: /^cannot read the private key \/etc\/ovn\/k\.pem \(OVSNET_OVN_SSL_KEY, OVSNET_OVN_SSL_CERT and OVSNET_OVN_SSL_CA\): ENOENT/ },
    );
  });

  it('reads the outside network of OVN routers and its gateway chassis, highest priority first when none is given', () => {
    const c = loadConfig({ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_EXTERNAL: 'physnet, 192.0.2.0/24 ,192.0.2.1', OVSNET_OVN_GATEWAYS: 'gw1,gw2,gw3:5' });
    assert.deepEqual(c.ovn?.external, { physnet: 'physnet', subnet: '192.0.2.0/24', nexthop: '192.0.2.1', gateways: [{ chassis: 'gw1', priority: 100 }, { chassis: 'gw2', priority: 99 }, { chassis: 'gw3', priority: 5 }] });
    const ranged = loadConfig({ OVSNET_OVN_NB: 'tcp:10.0.0.1:6641', OVSNET_OVN_EXTERNAL: 'physnet,192.0.2.0/24,192.0.2.1,192.0.2.100-192.0.2.150', OVSNET_OVN_GATEWAYS: 'gw1' });
    assert.equal(ranged.ovn?.external?.routerRange, '192.0.2.100-192.0.2.150');
  });
  for (const [env, message] of bad) {
    it(`rejects ${JSON.stringify(env)}`, () => {
      assert.throws(() => loadConfig(env), (err: Error) => err instanceof ConfigError && message.test(err.message));
    });
  }
});

describe('OVSDB wire helpers', () => {
  it('splits back-to-back JSON texts, across chunk boundaries and with braces in strings', () => {
    const stream = new JsonStream();
    assert.deepEqual(stream.push('{"id":1,"result":["a}"]}{"id":2,'), [{ id: 1, result: ['a}'] }]);
    assert.deepEqual(stream.push('"result":"x\\"{"}\n{"id":3}'), [{ id: 2, result: 'x"{' }, { id: 3 }]);
  });

  it('reads back-to-back texts fed in pieces of every size, escapes, numbers and literals split anywhere', () => {
    const texts = [
      { id: 1, error: null, result: [{ rows: [{ _uuid: ['uuid', 'a1b2'], name: 'p\\"1"', external_ids: ['map', [['k', 'caf\u00e9 \ud83d\ude00 \\']]], n: -12.5e3, up: true, down: false }] }] },
      { method: 'update', params: ['leader', { Database: {} }], id: null },
      [[], {}, [[{}]], '', '\\', 0, 1e-7, 'a}]"{['],
      JSON.parse('{"__proto__":"an own key, as JSON.parse makes it","x\\ny":"tab\\tquote\\""}') as unknown,
    ];
    const wire = texts.map((t) => JSON.stringify(t)).join('\n ');
    const expected = texts.map((t) => JSON.parse(JSON.stringify(t)) as unknown);
    for (let size = 1; size <= wire.length; size++) {
      const stream = new JsonStream();
      const got: unknown[] = [];
      for (let at = 0; at < wire.length; at += size) got.push(...stream.push(wire.slice(at, at + size)));
      assert.deepEqual(got, expected, `pieces of ${size}`);
    }
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.array(fc.jsonValue()), fc.dictionary(fc.string(), fc.jsonValue())), { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 8 }), (values, cuts) => {
        const text = values.map((v) => JSON.stringify(v)).join(' ');
        const at = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
        const stream = new JsonStream();
        const got: unknown[] = [];
        let from = 0;
        for (const cut of [...at, text.length]) {
          got.push(...stream.push(text.slice(from, cut)));
          from = cut;
        }
        assert.deepEqual(got, values.map((v) => JSON.parse(JSON.stringify(v)) as unknown));
      }),
    );
  });

  it('refuses what is not JSON, naming where', () => {
    for (const bad of ['{"a" 1}', '[1,]', '{,}', '[tru]', '{"a":1,}', '}', '["a\u0001"]', '["line\nbreak"]', '["\\x"]']) {
      assert.throws(() => new JsonStream().push(`${bad} `), JsonStreamError, bad);
    }
  });

  it('parses OVSDB addresses', () => {
    assert.deepEqual(parseOvsdbAddress('unix:/run/db.sock'), { path: '/run/db.sock' });
    assert.deepEqual(parseOvsdbAddress('tcp:127.0.0.1:6640'), { host: '127.0.0.1', port: 6640 });
    assert.deepEqual(parseOvsdbAddress('ssl:[fd00::1]:6641'), { host: 'fd00::1', port: 6641, tls: true });
    assert.equal(parseOvsdbAddress('tcp:host'), undefined);
  });

  it('reads maps, sets and optional scalars', () => {
    assert.deepEqual(readMap(['map', [['a', '1']]]), { a: '1' });
    assert.deepEqual(readSet(['set', [1, 2]]), [1, 2]);
    assert.deepEqual(readSet(5), [5]);
    assert.equal(readOptional(['set', []]), undefined);
    assert.equal(readOptional(860), 860);
  });
});

describe('keyed mutex', () => {
  it('runs work on one key in order and other keys concurrently', async () => {
    const mutex = new KeyedMutex();
    const log: string[] = [];
    const step = (key: string, name: string, ms: number) =>
      mutex.run(key, async () => {
        log.push(`${name}+`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`${name}-`);
      });
    await Promise.all([step('a', 'a1', 20), step('a', 'a2', 1), step('b', 'b1', 5)]);
    assert.ok(log.indexOf('a1-') < log.indexOf('a2+'), log.join(' '));
    assert.ok(log.indexOf('b1+') < log.indexOf('a1-'), log.join(' '));
    assert.equal(mutex.size, 0, 'no keys left behind');
  });

  it('keeps going after a failure', async () => {
    const mutex = new KeyedMutex();
    await assert.rejects(mutex.run('k', async () => { throw new Error('boom'); }));
    assert.equal(await mutex.run('k', async () => 42), 42);
  });
});

describe('running programs', () => {
  it('returns output and keeps stderr and the command line on failure', async () => {
    assert.equal((await run('echo', ['a b'])).stdout, 'a b');
    await assert.rejects(run('sh', ['-c', 'echo oops >&2; exit 3']), (err: CommandError) => {
      assert.equal(err.exitCode, 3);
      assert.match(err.message, /^sh -c echo oops >&2; exit 3: exit code 3: oops$/);
      return true;
    });
  });

  it('never uses a shell: arguments arrive verbatim', async () => {
    assert.equal((await run('echo', ['$(id -u)', ';', '|'])).stdout, '$(id -u) ; |');
  });

  it('feeds input and enforces the timeout', async () => {
    assert.equal((await run('cat', [], { input: 'hello' })).stdout, 'hello');
    await assert.rejects(run('sleep', ['5'], { timeoutMs: 100 }), /timed out after 100 ms/);
    await assert.rejects(run('no-such-program-here', []), /no-such-program-here is not installed/);
  });
});

describe('logger', () => {
  it('writes JSON lines with bound fields, above the threshold only', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'info', destination: { write: (l) => lines.push(l) } }).child({ networkId: 'n1' });
    log.debug('hidden');
    log.info('shown', { endpointId: 'e1', error: new Error('why') });
    assert.equal(lines.length, 1);
    const line = JSON.parse(lines[0]!);
    assert.equal(line.msg, 'shown');
    assert.equal(line.networkId, 'n1');
    assert.equal(line.endpointId, 'e1');
    assert.equal(line.error, 'why');
    assert.equal(line.level, 'info');
  });
});
